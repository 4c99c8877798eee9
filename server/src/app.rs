//! What every transport shares: the server state, admission (one permit per session, engine
//! slots leased at once or refused, never queued), refusals and session ids. Transports call
//! [`AppState::admit`] and hand the result to `session`; none of them imports `http`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::config::{Config, TurnMode};
use crate::metrics::{Counter, Metrics};
use crate::session::engine::Engines;
use crate::session::events::{AudioFormat, Limits, Modality, SessionConfig, TurnDetection};
use crate::session::turn::TurnSettings;
use crate::session::{EngineConnector, SessionParams};

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

/// Shared, read-mostly server state.
pub struct AppState {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Admission: one permit per open session.
    pub sessions: Arc<Semaphore>,
    /// `None` until engines are wired: sessions then run the protocol without them.
    pub connector: Option<Arc<dyn EngineConnector>>,
    next_session: AtomicU64,
    /// The voices the loaded TTS engines speak, read once (they do not change while serving).
    voices: Arc<[String]>,
    /// Distinguishes session ids across restarts.
    boot_tag: u64,
    /// Graceful shutdown: admission stops, calls in progress finish (see [`crate::drain`]).
    pub drain: crate::drain::Drain,
    /// SIP calls answered 200 and waiting for their ACK: promised a session, not yet holding
    /// one (a drain waits for them too).
    pub sip_calls_answered: AtomicUsize,
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
            sessions: Arc::new(Semaphore::new(config.server.max_sessions.get())),
            config,
            metrics,
            voices: connector
                .as_ref()
                .map(|c| c.voices())
                .unwrap_or_default()
                .into(),
            connector,
            next_session: AtomicU64::new(0),
            boot_tag,
            drain: crate::drain::Drain::default(),
            sip_calls_answered: AtomicUsize::new(0),
        }
    }

    /// Sessions open and SIP calls promised one: what a drain waits for.
    pub fn open_calls(&self) -> usize {
        self.sessions_open() + self.sip_calls_answered.load(Ordering::SeqCst)
    }

    /// Sessions holding an admission permit.
    fn sessions_open(&self) -> usize {
        self.config
            .server
            .max_sessions
            .get()
            .saturating_sub(self.sessions.available_permits())
    }

    /// Capacity and engine state now, for `/healthz` and `/readyz`.
    pub fn health(&self) -> crate::health::Report {
        crate::health::Report {
            sessions_open: self.sessions_open(),
            sessions_max: self.config.server.max_sessions.get(),
            max_backlog_ms: self.config.server.max_engine_backlog_ms,
            draining: self.drain.is_draining(),
            engines: self
                .connector
                .as_ref()
                .map(|c| c.health())
                .unwrap_or_default(),
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
        formats: (AudioFormat, AudioFormat),
    ) -> Result<SessionParams, Refusal> {
        if self.drain.is_draining() {
            self.metrics.add(
                Counter::SessionsRefused,
                transport,
                &[("reason", "draining")],
                1,
            );
            return Err(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "server_draining",
                message: "this server is shutting down and admits no new session; \
                          connect again (a balancer sends you to another node)"
                    .into(),
            });
        }
        self.admit_promised(transport, formats)
    }

    /// [`AppState::admit`] for a call already promised a session before a drain began (a SIP
    /// call answered 200 whose ACK arrives after): everything but the drain check.
    pub fn admit_promised(
        &self,
        transport: &'static str,
        formats: (AudioFormat, AudioFormat),
    ) -> Result<SessionParams, Refusal> {
        if let Some((engine, backlog_ms)) = self.health().behind() {
            self.metrics.add(
                Counter::SessionsRefused,
                transport,
                &[("reason", "engine_backlog")],
                1,
            );
            return Err(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "engines_behind",
                message: format!(
                    "the {engine} engine is {backlog_ms} ms behind real time; try again later"
                ),
            });
        }
        let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
            self.metrics.add(
                Counter::SessionsRefused,
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
                        Counter::SessionsRefused,
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
        self.metrics
            .add(Counter::SessionsAdmitted, transport, &[], 1);
        let s = &self.config.server;
        let mut initial = self.initial_session(session_id.clone());
        (initial.input_format, initial.output_format) = formats;
        Ok(SessionParams {
            initial,
            session_id,
            transport,
            engines: self.engines(),
            settings: TurnSettings {
                limits: Limits {
                    max_message_bytes: s.max_message_bytes,
                    max_audio_buffer_bytes: s.max_audio_buffer_bytes,
                },
                echo_guard: Duration::from_millis(self.config.session.echo_guard_ms),
                max_items: s.max_conversation_items,
                max_conversation_bytes: s.max_conversation_bytes,
                // `session::channel` turns this on for the transports that encode themselves.
                frames_out: false,
                max_speculations: self.config.session.max_speculations,
                lookahead: self.config.session.lookahead,
                idle_timeout: (s.idle_timeout_s > 0).then(|| Duration::from_secs(s.idle_timeout_s)),
                voices: self.voices.clone(),
            },
            send_timeout: Duration::from_millis(s.send_timeout_ms),
            metrics: self.metrics.clone(),
            link,
            permit,
            shutdown: self.drain.watch(),
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
                TurnMode::SemanticVad | TurnMode::ServerVad => Some(TurnDetection {
                    semantic: (d.turn_detection == TurnMode::SemanticVad).then_some(d.eagerness),
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

pub fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        serde_json::json!({"error": {"type": "server_error", "code": code, "message": message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
