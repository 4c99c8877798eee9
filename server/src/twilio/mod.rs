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
//! With `[twilio] auth_token` set, the upgrade must also carry Twilio's `X-Twilio-Signature`
//! of the stream URL ([`signature`]), so only Twilio itself can open a call.

pub mod bridge;
pub mod call;
pub mod codec;
pub mod signature;

use std::sync::Arc;

use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, http::StatusCode};

use crate::app::AppState;
use crate::auth::ApiKeys;
use crate::metrics::Counter;

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
    if let Err(reason) = check_signature(&state.config.twilio, &headers, &uri) {
        tracing::info!(
            transport = TRANSPORT_LABEL,
            reason,
            "call refused: bad Twilio signature"
        );
        state.metrics.add(
            Counter::SessionsRefused,
            TRANSPORT_LABEL,
            &[("reason", "signature")],
            1,
        );
        return (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response();
    }
    let auth = match keys.check_offered(&headers, uri.query()) {
        Some(true) => bridge::Auth::Accepted,
        None => bridge::Auth::AtStart(keys),
        Some(false) => {
            tracing::info!(
                transport = TRANSPORT_LABEL,
                "call refused: incorrect API key"
            );
            state.metrics.add(
                Counter::SessionsRefused,
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

/// Checks `X-Twilio-Signature` when an auth token is configured; `Err` says why not.
fn check_signature(
    config: &crate::config::TwilioConfig,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(), &'static str> {
    if config.auth_token.is_empty() {
        return Ok(());
    }
    let Some(offered) = headers.get(signature::HEADER).and_then(|v| v.to_str().ok()) else {
        return Err("missing X-Twilio-Signature");
    };
    let url = if config.public_url.is_empty() {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .ok_or("no Host header to rebuild the signed URL from")?;
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        format!("wss://{host}{path}")
    } else {
        config.public_url.clone()
    };
    if signature::verify(&config.auth_token, &url, offered) {
        Ok(())
    } else {
        Err("X-Twilio-Signature does not match the stream URL and auth token")
    }
}
