//! The OpenAI Realtime WebSocket transport: its protocol codec and its WebSocket leg onto
//! the session.
//!
//! - [`protocol`] (sans-IO): `decode_client(text, &Limits) -> Result<ClientMessage, ErrorInfo>`
//!   and `encode_server(&ServerEvent, event_id, Dialect) -> Option<String>`; GA and beta names.
//! - [`websocket`]: the socket as a `session::SessionIo`.
//! - [`routes`]: `GET /v1/realtime` (admission before the upgrade).

pub mod protocol;
pub mod websocket;

use std::sync::Arc;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::{AppState, hard_message_limit};
use crate::session::events::AudioFormat;
use protocol::Dialect;

/// The `transport` label of Realtime WebSocket sessions in metrics.
pub const TRANSPORT: &str = "websocket";

/// The route, to merge behind the auth layer.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/realtime", get(realtime))
}

fn wants_beta(headers: &HeaderMap) -> bool {
    let header_beta = headers.get("openai-beta").and_then(|v| v.to_str().ok());
    if Dialect::from_beta_header(header_beta) == Dialect::Beta {
        return true;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|p| p.trim() == "openai-beta.realtime-v1"))
        })
}

async fn realtime(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let dialect = if wants_beta(&headers) {
        Dialect::Beta
    } else {
        Dialect::Ga
    };
    // Admission happens before the upgrade: refuse at once, never queue.
    let params = match state.admit(TRANSPORT, (AudioFormat::Pcm16, AudioFormat::Pcm16)) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    let hard = hard_message_limit(&state.config);
    ws.protocols(["realtime"])
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| websocket::run(socket, dialect, params))
}
