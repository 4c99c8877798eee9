//! API-key check as one middleware layer in front of every protected route.
//!
//! A key is accepted from `Authorization: Bearer KEY`, from a WebSocket subprotocol
//! `openai-insecure-api-key.KEY` (what browsers must use, as they cannot set headers on a
//! WebSocket), or from the query parameter `api_key=KEY`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The keys one server accepts.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    keys: Arc<Vec<String>>,
}

pub const SUBPROTOCOL_KEY_PREFIX: &str = "openai-insecure-api-key.";

impl ApiKeys {
    pub fn new(keys: Vec<String>) -> Self {
        ApiKeys {
            keys: Arc::new(keys),
        }
    }

    /// Compares in time independent of where a candidate differs (keys are secrets).
    pub fn accepts(&self, candidate: &str) -> bool {
        self.keys.iter().fold(false, |ok, k| {
            ok | constant_time_eq(k.as_bytes(), candidate.as_bytes())
        })
    }
}

impl ApiKeys {
    /// `None` when the request offers no key at all; otherwise whether one it offers is accepted.
    pub fn check_offered(&self, headers: &HeaderMap, query: Option<&str>) -> Option<bool> {
        let offered = offered_keys(headers, query);
        (!offered.is_empty()).then(|| offered.iter().any(|k| self.accepts(k)))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every key the request offers, wherever it offers it.
fn offered_keys<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Vec<&'a str> {
    let mut out = Vec::new();
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(k) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        out.push(k.trim());
    }
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        if let Ok(v) = v.to_str() {
            out.extend(
                v.split(',')
                    .filter_map(|p| p.trim().strip_prefix(SUBPROTOCOL_KEY_PREFIX)),
            );
        }
    }
    if let Some(q) = query {
        out.extend(q.split('&').filter_map(|kv| kv.strip_prefix("api_key=")));
    }
    out
}

/// The middleware: 401 with an OpenAI-style error body unless a configured key is offered.
pub async fn require_key(State(keys): State<ApiKeys>, request: Request, next: Next) -> Response {
    let offered = offered_keys(request.headers(), request.uri().query());
    if offered.iter().any(|k| keys.accepts(k)) {
        return next.run(request).await;
    }
    let message = if offered.is_empty() {
        "missing API key: send 'Authorization: Bearer KEY'"
    } else {
        "incorrect API key provided"
    };
    tracing::info!(path = %request.uri().path(), "request refused: {message}");
    let body = serde_json::json!({
        "error": {"type": "invalid_request_error", "code": "invalid_api_key", "message": message}
    });
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn finds_keys_in_header_subprotocol_and_query() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(
                "realtime, openai-insecure-api-key.k2, openai-beta.realtime-v1",
            ),
        );
        assert_eq!(
            offered_keys(&h, Some("model=x&api_key=k3")),
            ["k1", "k2", "k3"]
        );
        assert!(offered_keys(&HeaderMap::new(), None).is_empty());
    }

    #[test]
    fn accepts_only_configured_keys() {
        let keys = ApiKeys::new(vec!["secret".into(), "other".into()]);
        assert!(keys.accepts("secret"));
        assert!(keys.accepts("other"));
        assert!(!keys.accepts("secreT"));
        assert!(!keys.accepts("secret2"));
        assert!(!keys.accepts(""));
    }
}
