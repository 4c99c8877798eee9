//! HTTP surface: `/v1/realtime` (WebSocket, behind the auth layer), `/healthz`, `/metrics`,
//! `/` (the web demo page when present) and `/web-demo/FILE` (its scripts and styles). Handlers stay thin: admission, then hand the
//! socket to its session task.

pub mod auth;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;

use crate::config::{Config, TurnMode};
use crate::metrics::Metrics;
use crate::realtime::events::{AudioFormat, Modality, SessionConfig, TurnDetection};
use crate::realtime::protocol::{Dialect, Limits};
use crate::realtime::session::{self, EngineConnector, SessionParams, TRANSPORT};

/// Why a new session was not admitted: answered to that caller in its protocol's terms.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.status, self.code, &self.message)
    }
}
use crate::realtime::turn::{Engines, TurnSettings};

/// Shared, read-mostly server state.
pub struct AppState {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Admission: one permit per open session.
    pub sessions: Arc<Semaphore>,
    /// `None` until engines are wired: sessions then run the protocol without them.
    pub connector: Option<Arc<dyn EngineConnector>>,
    next_session: AtomicU64,
    /// Distinguishes session ids across restarts.
    boot_tag: u64,
    /// Live WebRTC peers (for `DELETE /v1/webrtc/{id}`).
    pub webrtc_peers: crate::webrtc::Peers,
}

impl AppState {
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        connector: Option<Arc<dyn EngineConnector>>,
    ) -> Self {
        let boot_tag = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() % 0x1_0000);
        AppState {
            sessions: Arc::new(Semaphore::new(config.server.max_sessions)),
            config,
            metrics,
            connector,
            next_session: AtomicU64::new(0),
            boot_tag,
            webrtc_peers: Default::default(),
        }
    }

    fn engines(&self) -> Engines {
        self.connector
            .as_ref()
            .map(|c| c.engines())
            .unwrap_or_default()
    }

    /// Admits one session of any transport: takes an admission permit and leases engine slots,
    /// or refuses at once (never queues). `formats` are the session's input and output audio
    /// formats (what the transport puts in `input_audio_buffer.append` and gets in deltas).
    pub fn admit(
        &self,
        transport: &'static str,
        dialect: Dialect,
        formats: (AudioFormat, AudioFormat),
    ) -> Result<SessionParams, Refusal> {
        let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
            self.metrics.add(
                "antiphon_sessions_refused_total",
                transport,
                &[("reason", "capacity")],
                1,
            );
            return Err(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "server_at_capacity",
                message: "too many sessions; try again later".into(),
            });
        };
        let n = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        let session_id = format!("sess_{:04x}{n:06}", self.boot_tag);
        let link = match &self.connector {
            Some(c) => match c.connect(&session_id) {
                Ok(link) => Some(link),
                Err(reason) => {
                    self.metrics.add(
                        "antiphon_sessions_refused_total",
                        transport,
                        &[("reason", "engines")],
                        1,
                    );
                    return Err(Refusal {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        code: "engines_unavailable",
                        message: reason,
                    });
                }
            },
            None => None,
        };
        let s = &self.config.server;
        let mut initial = self.initial_session(session_id.clone());
        (initial.input_format, initial.output_format) = formats;
        Ok(SessionParams {
            initial,
            session_id,
            transport,
            dialect,
            engines: self.engines(),
            settings: TurnSettings {
                limits: Limits {
                    max_message_bytes: s.max_message_bytes,
                    max_audio_buffer_bytes: s.max_audio_buffer_bytes,
                },
                echo_guard: Duration::from_millis(self.config.session.echo_guard_ms),
                max_items: s.max_conversation_items,
                chunk_for_tts: !self.connector.as_ref().is_some_and(|c| c.tts_chunks_text()),
            },
            send_timeout: Duration::from_millis(s.send_timeout_ms),
            metrics: self.metrics.clone(),
            link,
            permit,
        })
    }

    fn initial_session(&self, id: String) -> SessionConfig {
        let d = &self.config.session;
        SessionConfig {
            id,
            model: d.model.clone(),
            instructions: d.instructions.clone(),
            voice: d.voice.clone(),
            input_format: AudioFormat::Pcm16,
            output_format: AudioFormat::Pcm16,
            turn_detection: match d.turn_detection {
                TurnMode::Manual => None,
                TurnMode::ServerVad => Some(TurnDetection {
                    threshold: d.vad_threshold,
                    prefix_padding_ms: d.prefix_padding_ms,
                    silence_duration_ms: d.silence_duration_ms,
                    create_response: true,
                    interrupt_response: true,
                }),
            },
            transcription: None,
            output_modalities: vec![Modality::Audio],
            max_output_tokens: Some(self.config.llm.max_tokens),
        }
    }
}

/// The largest message the WebSocket layer reads at all; between `max_message_bytes` and
/// this, the session answers with an `error` event and continues.
pub fn hard_message_limit(config: &Config) -> usize {
    (config.server.max_message_bytes * 4).max(16 << 20)
}

pub fn router(state: Arc<AppState>, keys: auth::ApiKeys) -> Router {
    let twilio = crate::twilio::routes(keys.clone());
    let protected = Router::new()
        .route("/v1/realtime", get(realtime))
        .route("/v1/webrtc", axum::routing::post(crate::webrtc::offer))
        .route("/v1/webrtc/config", get(crate::webrtc::config))
        .route(
            "/v1/webrtc/{id}",
            axum::routing::delete(crate::webrtc::hang_up),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            keys,
            auth::require_key,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .route("/web-demo/{file}", get(web_demo_file))
        .merge(protected)
        .merge(twilio)
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
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

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        serde_json::json!({"error": {"type": "server_error", "code": code, "message": message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
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
    let params = match state.admit(TRANSPORT, dialect, (AudioFormat::Pcm16, AudioFormat::Pcm16)) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    let hard = hard_message_limit(&state.config);
    ws.protocols(["realtime"])
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| session::websocket::run(socket, params))
}
