//! One module per resource; each maps its REST routes to gRPC calls.

pub mod admin;
pub mod articles;
pub mod comments;
pub mod docs;
pub mod health;
pub mod keys;
pub mod notifications;
pub mod profiles;
pub mod tags;
pub mod uploads;
pub mod users;

use crate::route_table::RouteTable;

/// Every route the gateway serves.
pub fn all() -> RouteTable {
    RouteTable::default()
        .merge(users::routes())
        .merge(admin::routes())
        .merge(profiles::routes())
        .merge(articles::routes())
        .merge(comments::routes())
        .merge(tags::routes())
        .merge(uploads::routes())
        .merge(notifications::routes())
        .merge(health::routes())
        .merge(keys::routes())
        .merge(docs::routes())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    /// Routes served but deliberately left out of the OpenAPI document. None:
    /// the document describes the operational routes (`/healthz`, `/readyz`)
    /// and itself (`/api/openapi.yaml`, `/api/openapi.json`, `/api/docs`)
    /// too, since its interactive page is where operators try them. What
    /// the router answers outside this table is not a route of its own:
    /// `HEAD` is axum's implicit twin of every `GET`, CORS preflights
    /// (`OPTIONS`) are answered by the CORS layer on any path, unknown paths
    /// get the 404 fallback, and `/metrics` is on the admin listener, not
    /// on this router.
    const OUTSIDE_OPENAPI: [(&str, &str); 0] = [];

    const HTTP_METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// (METHOD, path) of every operation in the OpenAPI document.
    fn documented() -> BTreeSet<(String, String)> {
        let document: Value =
            serde_norway::from_str(docs::OPENAPI_YAML).expect("openapi.yaml is valid YAML");
        let mut operations = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths is a map") {
            for method in item.as_object().expect("path item is a map").keys() {
                // A path item may also hold `parameters`, `summary` and such.
                if HTTP_METHODS.contains(&method.as_str()) {
                    operations.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        operations
    }

    /// (METHOD, path) of every route in the router. axum 0.8 writes path
    /// parameters as OpenAPI does (`{slug}`), so paths compare as written,
    /// parameter names included; a catch-all (`{*rest}`) would have no
    /// OpenAPI equivalent, so there must be none.
    fn served() -> BTreeSet<(String, String)> {
        all()
            .served()
            .iter()
            .map(|(method, path)| {
                assert!(
                    !path.contains("{*"),
                    "{path}: a catch-all cannot be documented"
                );
                (method.to_string(), (*path).to_owned())
            })
            .collect()
    }

    #[test]
    fn the_router_serves_exactly_the_documented_operations() {
        let served = served();
        let documented = documented();
        let outside: BTreeSet<(String, String)> = OUTSIDE_OPENAPI
            .iter()
            .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
            .collect();
        let undocumented: Vec<_> = served
            .difference(&documented)
            .filter(|route| !outside.contains(*route))
            .collect();
        assert!(
            undocumented.is_empty(),
            "served but not in openapi.yaml: {undocumented:?}"
        );
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            unserved.is_empty(),
            "in openapi.yaml but not served: {unserved:?}"
        );
        for route in &outside {
            assert!(
                served.contains(route) && !documented.contains(route),
                "{route:?} is listed as outside the document but is not served, or is documented"
            );
        }
    }
}
