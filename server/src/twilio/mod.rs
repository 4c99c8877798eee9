//! Twilio Media Streams at `/v1/twilio`: a phone call through Twilio's `<Connect><Stream>`
//! becomes a voice session. See docs/TWILIO.md for set-up, auth and the message mapping.
//!
//! - [`codec`]: the JSON messages (sans-IO).
//! - [`call`]: the call state machine: stream state, playout marks, barge-in (sans-IO).
//! - [`bridge`]: the tokio task between the WebSocket and a channel session.
//!
//! Auth: Twilio cannot send our bearer header and its `<Stream url>` takes no query string, so
//! the key travels as the custom parameter `api_key` (`<Parameter name="api_key" …/>`) and is
//! checked at `start`, before a session is admitted. A key offered the usual ways (bearer
//! header, subprotocol, `?api_key=`) is checked before the upgrade, as on `/v1/realtime`.

pub mod bridge;
pub mod call;
pub mod codec;

use std::sync::Arc;

use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, http::StatusCode};

use crate::http::AppState;
use crate::http::auth::ApiKeys;

/// The `transport` label of Twilio calls in metrics and logs.
pub const TRANSPORT_LABEL: &str = "twilio";

/// The custom parameter (TwiML `<Parameter name=…>`) that carries the API key.
pub const KEY_PARAMETER: &str = "api_key";

/// The largest WebSocket message read at all; Twilio's are a few hundred bytes.
pub const HARD_MESSAGE_LIMIT: usize = 1 << 20;

/// The largest message decoded; bigger ones are rejected (counted) and the call goes on.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The route, to merge into the server's router (outside the bearer-auth layer: the key is
/// checked here, see the module docs).
pub fn routes(keys: ApiKeys) -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/twilio", get(upgrade))
        .route_layer(Extension(keys))
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    Extension(keys): Extension<ApiKeys>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let auth = match keys.check_offered(&headers, uri.query()) {
        Some(true) => bridge::Auth::Accepted,
        None => bridge::Auth::AtStart(keys),
        Some(false) => {
            tracing::info!(
                transport = TRANSPORT_LABEL,
                "call refused: incorrect API key"
            );
            state.metrics.add(
                "antiphon_sessions_refused_total",
                TRANSPORT_LABEL,
                &[("reason", "auth")],
                1,
            );
            return (StatusCode::UNAUTHORIZED, "incorrect API key\n").into_response();
        }
    };
    ws.max_message_size(HARD_MESSAGE_LIMIT)
        .max_frame_size(HARD_MESSAGE_LIMIT)
        .on_upgrade(move |socket| bridge::run(socket, state, auth))
}
