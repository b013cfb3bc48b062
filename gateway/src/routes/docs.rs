//! The REST surface documents itself: the OpenAPI document as written (YAML),
//! the same document as JSON (converted once, on first request), and a
//! self-contained interactive page that reads the JSON.

use std::sync::LazyLock;

use axum::{
    body::Bytes,
    http::{StatusCode, header},
    response::IntoResponse,
};

use crate::{
    error::ApiError,
    route_table::{RouteTable, get},
};

pub(crate) const OPENAPI_YAML: &str = include_str!("../../openapi/openapi.yaml");
const DOCS_HTML: &str = include_str!("../../openapi/docs.html");

/// The page is one file that loads nothing from elsewhere; the policy keeps it so.
const DOCS_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A conversion error cannot happen with the document the tests below accept,
/// but it is still answered as a 500 rather than a panic on a request path.
static OPENAPI_JSON: LazyLock<Result<Bytes, String>> = LazyLock::new(|| {
    let document: serde_json::Value =
        serde_norway::from_str(OPENAPI_YAML).map_err(|e| e.to_string())?;
    serde_json::to_vec(&document)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
});

pub fn routes() -> RouteTable {
    RouteTable::default()
        .route("/api/openapi.yaml", get(openapi_yaml))
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/docs", get(docs_page))
}

async fn openapi_yaml() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

async fn openapi_json() -> Result<impl IntoResponse, ApiError> {
    match &*OPENAPI_JSON {
        Ok(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json.clone())),
        Err(error) => {
            tracing::error!(%error, "embedded OpenAPI document does not convert to JSON");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "body",
                "internal server error",
            ))
        }
    }
}

async fn docs_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DOCS_CSP),
        ],
        DOCS_HTML,
    )
}

#[cfg(test)]
mod tests {
    use axum::response::Response;
    use serde_json::Value;

    use super::*;

    fn document() -> Value {
        serde_norway::from_str(OPENAPI_YAML).expect("openapi.yaml is valid YAML")
    }

    fn operations(document: &Value) -> Vec<(String, String, &Value)> {
        let mut found = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths is a map") {
            for (method, operation) in item.as_object().expect("path item is a map") {
                found.push((method.to_uppercase(), path.clone(), operation));
            }
        }
        found
    }

    fn collect_refs<'a>(value: &'a Value, refs: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("$ref", Value::String(target)) => refs.push(target),
                        _ => collect_refs(child, refs),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
            _ => {}
        }
    }

    fn header_value(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn document_is_openapi_3_covering_every_route_family() {
        let document = document();
        let version = document["openapi"].as_str().expect("openapi version");
        assert!(version.starts_with("3."), "{version}");
        assert!(document["info"]["title"].is_string());
        assert_eq!(document["servers"][0]["url"], "/");
        let paths = document["paths"].as_object().expect("paths");
        for path in [
            "/api/users",
            "/api/users/login",
            "/api/user",
            "/api/articles",
            "/api/articles/{slug}",
            "/api/articles/{slug}/comments/{id}",
            "/api/users/refresh",
            "/api/user/sessions/{id}",
            "/api/admin/users",
            "/api/admin/users/{username}/ban",
            "/api/notifications",
            "/api/notifications/stream",
            "/healthz",
            "/readyz",
            "/api/openapi.json",
            "/api/docs",
        ] {
            assert!(paths.contains_key(path), "{path} is not documented");
        }
    }

    #[test]
    fn every_ref_resolves_to_a_component() {
        let document = document();
        let mut refs = Vec::new();
        collect_refs(&document, &mut refs);
        assert!(refs.len() > 50, "only {} refs found", refs.len());
        for target in refs {
            let pointer = target
                .strip_prefix('#')
                .filter(|p| p.starts_with("/components/"))
                .unwrap_or_else(|| panic!("{target} is not a local component reference"));
            assert!(
                document.pointer(pointer).is_some(),
                "{target} does not resolve"
            );
        }
    }

    #[test]
    fn operations_are_identified_and_only_those_needing_a_token_list_401() {
        let document = document();
        let mut ids = std::collections::HashSet::new();
        for (method, path, operation) in operations(&document) {
            let id = operation["operationId"].as_str();
            assert!(
                id.is_some_and(|id| ids.insert(id.to_owned())),
                "{method} {path}: missing or duplicate operationId"
            );
            let responses = operation["responses"].as_object().expect("responses");
            // Optional auth (`{}` among the alternatives) serves a bad token
            // as anonymous, so only operations that need a token answer 401.
            if let Some(security) = operation.get("security").and_then(Value::as_array) {
                let optional = security
                    .iter()
                    .any(|s| s.as_object().is_some_and(|o| o.is_empty()));
                assert_eq!(
                    responses.contains_key("401"),
                    !optional,
                    "{method} {path}: 401 listed if and only if auth is required"
                );
            }
            if operation.get("requestBody").is_some() {
                assert!(responses.contains_key("422"), "{method} {path} lacks 422");
            }
        }
    }

    #[test]
    fn json_is_the_same_document() {
        let json = OPENAPI_JSON.as_ref().expect("converts to JSON");
        let parsed: Value = serde_json::from_slice(json).expect("valid JSON");
        assert_eq!(parsed, document());
    }

    #[test]
    fn routes_are_valid_axum_paths() {
        // Router::route panics on a malformed or duplicate path.
        let _ = routes();
    }

    #[tokio::test]
    async fn each_representation_has_its_content_type() {
        let yaml = openapi_yaml().await.into_response();
        assert_eq!(
            header_value(&yaml, header::CONTENT_TYPE),
            "application/yaml"
        );
        let json = openapi_json().await.into_response();
        assert_eq!(json.status(), StatusCode::OK);
        assert_eq!(
            header_value(&json, header::CONTENT_TYPE),
            "application/json"
        );
        let page = docs_page().await.into_response();
        assert_eq!(
            header_value(&page, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert!(
            header_value(&page, header::CONTENT_SECURITY_POLICY).contains("default-src 'none'")
        );
    }

    #[test]
    fn docs_page_loads_nothing_from_elsewhere() {
        let page = DOCS_HTML.to_lowercase();
        assert!(page.contains("/api/openapi.json"));
        for external in ["http://", "https://", "<link", " src=", "@import", "url("] {
            assert!(!page.contains(external), "docs.html contains {external}");
        }
    }

    #[test]
    fn docs_page_never_parses_text_as_html() {
        // Descriptions and answers become text nodes, or elements built one
        // by one, so nothing they contain can become markup.
        for sink in [
            "innerhtml",
            "outerhtml",
            "insertadjacenthtml",
            "document.write",
        ] {
            assert!(
                !DOCS_HTML.to_lowercase().contains(sink),
                "docs.html uses {sink}"
            );
        }
    }
}
