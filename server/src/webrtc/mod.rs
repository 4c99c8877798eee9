//! Browser voice over WebRTC, WHIP-style: `POST /v1/webrtc` with an SDP offer (body
//! `application/sdp`) answers `201 Created` with the SDP answer and `Location:
//! /v1/webrtc/{id}`; `DELETE /v1/webrtc/{id}` hangs up; `GET /v1/webrtc/config` gives the
//! page its STUN/TURN servers. Audio is Opus 48 kHz both ways; a data channel carries the
//! Realtime API's JSON events (GA names) both ways. The transport is an adapter onto the one
//! session driver (`session::channel`), never a fork of the pipeline.
//!
//! The server side is ICE-lite (str0m, sans-IO): it offers host candidates and answers the
//! browser's connectivity checks, never probes itself, so a browser must be able to reach one
//! of those addresses (see docs/WEBRTC.md for NAT, STUN and TURN).

pub mod codec;
pub mod net;
pub mod peer;
pub mod playout;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::{Candidate, Rtc};
use tokio::sync::oneshot;

use crate::app::AppState;
use crate::session::channel;
use crate::session::events::AudioFormat;
use crate::session::events::Limits;

/// The routes, to merge behind the auth layer.
pub fn routes() -> axum::Router<Arc<AppState>> {
    use axum::routing::{delete, get, post};
    axum::Router::new()
        .route("/v1/webrtc", post(offer))
        .route("/v1/webrtc/config", get(config))
        .route("/v1/webrtc/{id}", delete(hang_up))
        .layer(axum::Extension(Arc::new(Peers::default())))
}

/// The `transport` label of WebRTC sessions in metrics.
pub const TRANSPORT: &str = "webrtc";
/// Largest SDP offer accepted (browsers send a few KiB).
const MAX_OFFER_BYTES: usize = 64 << 10;

/// Live peers by id, so `DELETE` can hang one up. Entries leave when their task ends.
#[derive(Default)]
pub struct Peers {
    hangups: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

impl Peers {
    fn insert(&self, id: String, hangup: oneshot::Sender<()>) {
        self.lock().insert(id, hangup);
    }

    fn remove(&self, id: &str) -> Option<oneshot::Sender<()>> {
        self.lock().remove(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
        // A panic while holding this lock leaves a plain map behind: still usable.
        self.hangups.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"type": "invalid_request_error", "code": code, "message": message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /v1/webrtc/config`: what the page passes to `RTCPeerConnection`.
pub async fn config(State(state): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({ "ice_servers": state.config.webrtc.ice_servers });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The ICE-lite peer for a parsed offer, with a host candidate per address, and its answer
/// (also what the `webrtc_offer` fuzz target drives).
pub fn answer_offer(
    offer: SdpOffer,
    candidates: &[SocketAddr],
    now: Instant,
) -> Result<(Rtc, SdpAnswer), String> {
    let mut rtc = Rtc::builder()
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false)
        .build(now);
    for &addr in candidates {
        match Candidate::host(addr, "udp") {
            Ok(c) => {
                rtc.add_local_candidate(c);
            }
            Err(e) => tracing::warn!("webrtc: no host candidate for {addr}: {e}"),
        }
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| e.to_string())?;
    Ok((rtc, answer))
}

/// `POST /v1/webrtc`: SDP offer in, SDP answer out; starts the peer and its session.
pub async fn offer(
    State(state): State<Arc<AppState>>,
    axum::Extension(peers): axum::Extension<Arc<Peers>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/sdp") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_content_type",
            "send the SDP offer as the body with Content-Type: application/sdp",
        );
    }
    if body.len() > MAX_OFFER_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "offer_too_large",
            "SDP offer larger than 64 KiB",
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_offer",
            "SDP offer is not UTF-8",
        );
    };
    let offer = match SdpOffer::from_sdp_string(text) {
        Ok(o) => o,
        Err(e) => {
            // The parser's message names positions by memory address: kept out of the reply.
            tracing::debug!(error = %e, "webrtc: SDP offer does not parse");
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_offer",
                "SDP offer does not parse (RFC 8866 text with an audio m= line expected)",
            );
        }
    };

    let cfg = &state.config.webrtc;
    let mut sockets = Vec::new();
    let networked = !state.config.server.api_keys.is_empty();
    for ip in net::candidate_ips(cfg, networked) {
        match net::bind(ip, cfg.port_range).await {
            Ok(s) => sockets.push(s),
            // A configured or detected address that cannot be bound: offer the others.
            Err(e) => tracing::warn!("webrtc: cannot bind a UDP socket on {ip}: {e}"),
        }
    }
    if sockets.is_empty() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_media_socket",
            "no UDP socket for media could be bound (check webrtc.candidate_ips / port_range)",
        );
    }

    let addrs: Vec<SocketAddr> = sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
    let (rtc, answer) = match answer_offer(offer, &addrs, Instant::now()) {
        Ok(a) => a,
        Err(why) => {
            return error(
                StatusCode::BAD_REQUEST,
                "offer_rejected",
                &format!("cannot answer this offer: {why}"),
            );
        }
    };

    // Admission last: nothing above holds a slot, and a refusal costs the caller nothing.
    let params = match state.admit(TRANSPORT, (AudioFormat::Pcm16, AudioFormat::Pcm16)) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let id = params.session_id.clone();
    let s = &state.config.server;
    let limits = Limits {
        max_message_bytes: s.max_message_bytes,
        max_audio_buffer_bytes: s.max_audio_buffer_bytes,
    };
    // The resource URL is the caller's capability to hang up: random, not the sequential
    // session id, so no other key holder can guess it.
    let resource = match resource_token() {
        // Prefixed with the node's name, so a balancer routes the hang-up to this node.
        Ok(t) if state.config.server.node_id.is_empty() => t,
        Ok(t) => format!("{}-{t}", state.config.server.node_id),
        Err(e) => {
            tracing::error!("webrtc: no randomness for a resource id: {e}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_randomness",
                "the server could not make a session resource id",
            );
        }
    };
    let session = channel::spawn(params);
    let (hangup_tx, hangup) = oneshot::channel();
    peers.insert(resource.clone(), hangup_tx);
    let peer_params = peer::PeerParams {
        id: id.clone(),
        rtc,
        sockets,
        session,
        limits,
        hangup,
    };
    let task_peers = peers.clone();
    let task_resource = resource.clone();
    tokio::spawn(async move {
        peer::run(peer_params).await;
        task_peers.remove(&task_resource);
    });

    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, format!("/v1/webrtc/{resource}")),
        ],
        answer.to_sdp_string(),
    )
        .into_response()
}

/// 128 random bits from the OS, as 32 hex digits.
fn resource_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `DELETE /v1/webrtc/{resource}`: hangs up the peer whose offer was answered with that
/// `Location` (only its owner knows it).
pub async fn hang_up(
    axum::Extension(peers): axum::Extension<Arc<Peers>>,
    Path(id): Path<String>,
) -> Response {
    match peers.remove(&id) {
        Some(hangup) => {
            // The task may have ended a moment ago: nothing left to stop then.
            let _ = hangup.send(());
            StatusCode::OK.into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_peer",
            "no such WebRTC session",
        ),
    }
}
