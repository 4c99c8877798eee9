//! HTTP surface: merges the transports' routes (`/v1/realtime`, `/v1/webrtc…` behind the
//! auth layer; `/v1/twilio`, which checks its key itself) and serves `/healthz`, `/readyz`
//! (see [`crate::health`]), `/metrics`,
//! `/` (the web demo page when present) and `/web-demo/FILE` (its scripts and styles).

pub mod listen;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::AppState;
use crate::auth::{self, ApiKeys};

pub fn router(state: Arc<AppState>, keys: ApiKeys) -> Router {
    let twilio = crate::twilio::routes(keys.clone());
    let admin_keys = &state.config.server.admin_keys;
    let admin = if admin_keys.is_empty() {
        Router::new().route("/admin/drain", post(admin_off))
    } else {
        Router::new()
            .route("/admin/drain", post(admin_drain))
            .route_layer(axum::middleware::from_fn_with_state(
                ApiKeys::new(admin_keys.clone()),
                auth::require_key,
            ))
    };
    let protected = Router::new()
        .merge(crate::realtime::routes())
        .merge(crate::webrtc::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            keys,
            auth::require_key,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .route("/web-demo/{file}", get(web_demo_file))
        .merge(protected)
        .merge(admin)
        .merge(twilio)
        .with_state(state)
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let report = state.health();
    (report.liveness(), axum::Json(report.to_json())).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let report = state.health();
    (report.readiness(), axum::Json(report.to_json())).into_response()
}

/// `POST /admin/drain`: starts a graceful drain (as SIGTERM does; see [`crate::drain`]).
async fn admin_drain(State(state): State<Arc<AppState>>) -> Response {
    let started = state.drain.start();
    if started {
        tracing::info!("drain requested via /admin/drain");
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({
            "draining": true,
            "already_draining": !started,
            "open_calls": state.open_calls(),
            "grace_s": state.config.server.drain_grace_s,
        })),
    )
        .into_response()
}

async fn admin_off() -> Response {
    crate::app::refuse(
        StatusCode::FORBIDDEN,
        "admin_disabled",
        "the admin endpoints are off: set server.admin_keys to use them",
    )
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    text.push_str(&crate::health::render_metrics(
        &state.health(),
        &state.config.server.node_id,
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn index(State(state): State<Arc<AppState>>) -> Response {
    let path = state.config.server.web_demo_dir.join("index.html");
    match tokio::fs::read_to_string(&path).await {
        Ok(html) => Html(html).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no web demo installed\n").into_response(),
    }
}

/// Content type of a web demo asset, by extension; `None` for anything we do not serve.
fn web_demo_content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "md" => "text/markdown; charset=utf-8",
        _ => return None,
    })
}

/// A plain file directly inside the web demo dir: no subfolders, no hidden files, no `..`.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

async fn web_demo_file(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "not found\n").into_response();
    if !is_plain_file_name(&file) {
        return not_found();
    }
    let Some(content_type) = web_demo_content_type(&file) else {
        return not_found();
    };
    let path = state.config.server.web_demo_dir.join(&file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => not_found(),
    }
}
