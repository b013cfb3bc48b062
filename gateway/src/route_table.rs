//! The router, built so that it can say what it serves. axum's `Router`
//! cannot list its routes; this table records each (method, path) as it is
//! added, so the OpenAPI document can be checked against the real router
//! (`routes::tests`). Route modules use these `get`/`post`/`put`/`delete`
//! in place of axum's, so a route cannot be added without being recorded.

use axum::{
    Router,
    extract::DefaultBodyLimit,
    handler::Handler,
    http::Method,
    routing::{MethodFilter, MethodRouter},
};

use crate::state::AppState;

/// The handlers of one path, and the methods they answer.
pub struct Endpoint {
    methods: Vec<Method>,
    router: MethodRouter<AppState>,
}

pub fn get<H: Handler<T, AppState>, T: 'static>(handler: H) -> Endpoint {
    Endpoint::new().on(Method::GET, MethodFilter::GET, handler)
}

pub fn post<H: Handler<T, AppState>, T: 'static>(handler: H) -> Endpoint {
    Endpoint::new().on(Method::POST, MethodFilter::POST, handler)
}

pub fn put<H: Handler<T, AppState>, T: 'static>(handler: H) -> Endpoint {
    Endpoint::new().on(Method::PUT, MethodFilter::PUT, handler)
}

pub fn delete<H: Handler<T, AppState>, T: 'static>(handler: H) -> Endpoint {
    Endpoint::new().on(Method::DELETE, MethodFilter::DELETE, handler)
}

impl Endpoint {
    fn new() -> Self {
        Self {
            methods: Vec::new(),
            router: MethodRouter::new(),
        }
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, handler: H) -> Self {
        self.on(Method::POST, MethodFilter::POST, handler)
    }

    pub fn put<H: Handler<T, AppState>, T: 'static>(self, handler: H) -> Self {
        self.on(Method::PUT, MethodFilter::PUT, handler)
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, handler: H) -> Self {
        self.on(Method::DELETE, MethodFilter::DELETE, handler)
    }

    /// Lifts the router-wide body limit (`GATEWAY_MAX_BODY_BYTES`) for a
    /// handler that bounds its body by a limit of its own (uploads).
    pub fn bounding_its_own_body(mut self) -> Self {
        self.router = self.router.layer(DefaultBodyLimit::disable());
        self
    }

    fn on<H: Handler<T, AppState>, T: 'static>(
        mut self,
        method: Method,
        filter: MethodFilter,
        handler: H,
    ) -> Self {
        self.methods.push(method);
        self.router = self.router.on(filter, handler);
        self
    }
}

/// Routes and the (method, path) pairs they serve. Paths are axum's
/// (`/api/articles/{slug}`).
pub struct RouteTable {
    router: Router<AppState>,
    served: Vec<(Method, &'static str)>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self {
            router: Router::new(),
            served: Vec::new(),
        }
    }
}

impl RouteTable {
    pub fn route(mut self, path: &'static str, endpoint: Endpoint) -> Self {
        self.served
            .extend(endpoint.methods.into_iter().map(|method| (method, path)));
        self.router = self.router.route(path, endpoint.router);
        self
    }

    pub fn merge(mut self, other: Self) -> Self {
        self.served.extend(other.served);
        self.router = self.router.merge(other.router);
        self
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }

    #[cfg(test)]
    pub fn served(&self) -> &[(Method, &'static str)] {
        &self.served
    }
}
