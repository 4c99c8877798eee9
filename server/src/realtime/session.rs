//! One Realtime session: a tokio task that owns its WebSocket, its [`TurnManager`] and its
//! engine link. It waits on the socket, the engine-event inbox and the turn machine's next
//! deadline; after each input it drains the machine, writes events and forwards commands.
//! When the client vanishes the task ends and drops everything it owns (the admission permit,
//! the engine link and so its slot leases).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant as TokioInstant;
use tracing::Instrument;

use super::events::{ServerEvent, SessionConfig};
use super::protocol::{self, Dialect};
use super::turn::{
    EngineCommand, EngineEvent, Engines, Output, TurnCounters, TurnManager, TurnSettings,
};
use crate::metrics::Metrics;

/// The `transport` label of this leg in metrics.
pub const TRANSPORT: &str = "websocket";

/// A session's connection to the engines: commands out, events in. Both channels are bounded;
/// the events carry the instant they were produced (stamped once, where they were made).
pub struct EngineLink {
    pub commands: mpsc::Sender<EngineCommand>,
    pub events: mpsc::Receiver<(std::time::Instant, EngineEvent)>,
}

/// Where the engines plug in. The server holds one; each new session asks it for a link at
/// admission (leasing engine slots), and a refusal turns into HTTP 503 before the upgrade.
pub trait EngineConnector: Send + Sync {
    /// Which engines sessions can use.
    fn engines(&self) -> Engines;
    /// Leases what one session needs. Dropping the returned link must free the leases.
    fn connect(&self, session_id: &str) -> Result<EngineLink, String>;
    /// True when the TTS engine cuts its input into chunks itself (then the turn machine
    /// forwards LLM tokens unchunked).
    fn tts_chunks_text(&self) -> bool {
        false
    }
}

/// Everything a session needs besides its socket.
pub struct SessionParams {
    pub session_id: String,
    pub dialect: Dialect,
    pub initial: SessionConfig,
    pub engines: Engines,
    pub settings: TurnSettings,
    pub send_timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub link: Option<EngineLink>,
    /// Held for the session's life: frees an admission slot on drop.
    pub permit: OwnedSemaphorePermit,
}

/// Decrements the sessions gauge however the task ends (return, error or panic unwinding).
struct SessionGauge(Arc<Metrics>);

impl SessionGauge {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.gauge_add("antiphon_sessions", TRANSPORT, &[], 1);
        SessionGauge(metrics)
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.gauge_add("antiphon_sessions", TRANSPORT, &[], -1);
    }
}

#[derive(Debug)]
enum End {
    ClientGone,
    SendTimeout,
}

struct Writer {
    socket: futures_util::stream::SplitSink<WebSocket, Message>,
    dialect: Dialect,
    next_event: u64,
    send_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Writer {
    async fn send(&mut self, event: &ServerEvent) -> Result<bool, End> {
        self.next_event += 1;
        let id = format!("event_{}", self.next_event);
        let Some(text) = protocol::encode_server(event, &id, self.dialect) else {
            return Ok(false);
        };
        match tokio::time::timeout(
            self.send_timeout,
            self.socket.send(Message::Text(text.into())),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(End::ClientGone),
            Err(_) => return Err(End::SendTimeout),
        }
        record(&self.metrics, event);
        Ok(true)
    }
}

fn record(metrics: &Metrics, event: &ServerEvent) {
    match event {
        ServerEvent::ResponseCreated(_) => metrics.add("antiphon_turns_total", TRANSPORT, &[], 1),
        ServerEvent::ResponseDone(r) if r.status == super::events::ResponseStatus::Cancelled => {
            metrics.add("antiphon_responses_cancelled_total", TRANSPORT, &[], 1)
        }
        ServerEvent::Error(e) => {
            metrics.add("antiphon_errors_total", TRANSPORT, &[("code", e.code)], 1)
        }
        ServerEvent::TurnLatency(t) => {
            for (stage, v) in [
                ("asr_final", t.asr_final_ms),
                ("llm_first_token", t.llm_first_token_ms),
                ("first_clause", t.first_clause_ms),
                ("tts_first_audio", t.tts_first_audio_ms),
                ("first_audio_sent", t.first_audio_sent_ms),
            ] {
                if let Some(ms) = v.filter(|ms| *ms >= 0.0) {
                    metrics.observe(
                        "antiphon_turn_latency_seconds",
                        TRANSPORT,
                        &[("stage", stage)],
                        Duration::from_secs_f64(ms / 1000.0),
                    );
                }
            }
        }
        _ => {}
    }
}

/// Runs a session to its end. Spawned by the HTTP layer after the WebSocket upgrade.
pub async fn run(socket: WebSocket, params: SessionParams) {
    let span = tracing::info_span!("session", id = %params.session_id, dialect = ?params.dialect);
    async move {
        tracing::info!("session opened");
        let end = drive(socket, params).await;
        tracing::info!(reason = ?end, "session closed");
    }
    .instrument(span)
    .await
}

async fn drive(socket: WebSocket, params: SessionParams) -> End {
    let SessionParams {
        dialect,
        initial,
        engines,
        settings,
        send_timeout,
        metrics,
        link,
        permit,
        ..
    } = params;
    let _permit = permit;
    let _gauge = SessionGauge::new(metrics.clone());
    let (sink, mut stream) = socket.split();
    let mut writer = Writer {
        socket: sink,
        dialect,
        next_event: 0,
        send_timeout,
        metrics: metrics.clone(),
    };
    let (commands, mut engine_events) = match link {
        Some(l) => (Some(l.commands), Some(l.events)),
        None => (None, None),
    };
    let limits = settings.limits;
    let mut turn = TurnManager::new(initial, engines, settings);
    let mut counters = TurnCounters::default();
    let mut queue_depth: i64 = 0;
    loop {
        if let Err(end) = drain(&mut turn, &mut writer, commands.as_ref()).await {
            return end;
        }
        let now_counters = turn.counters();
        account(&metrics, &mut counters, now_counters);
        if let Some(tx) = &commands {
            let depth = (tx.max_capacity() - tx.capacity()) as i64;
            metrics.gauge_add(
                "antiphon_queue_depth",
                TRANSPORT,
                &[("queue", "engine_commands")],
                depth - queue_depth,
            );
            queue_depth = depth;
        }

        let deadline = turn.poll_timeout().map(TokioInstant::from_std);
        tokio::select! {
            msg = stream.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Text(text))) => {
                    let now = std::time::Instant::now();
                    match protocol::decode_client(text.as_str(), &limits) {
                        Ok(m) => {
                            let span = tracing::debug_span!("client_event", event_id = ?m.event_id);
                            let _g = span.enter();
                            turn.handle_client(now, m);
                        }
                        Err(e) => {
                            tracing::debug!(code = e.code, message = %e.message, "rejected client message");
                            if let Err(end) = writer.send(&ServerEvent::Error(e)).await {
                                return end;
                            }
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let e = super::events::ErrorInfo::invalid_request(
                        "binary_not_supported",
                        "binary WebSocket messages are not part of the protocol; send JSON text events",
                    );
                    if let Err(end) = writer.send(&ServerEvent::Error(e)).await {
                        return end;
                    }
                }
                // axum answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            },
            ev = recv_engine(&mut engine_events) => match ev {
                Some((at, e)) => turn.handle_engine(at, e),
                None => {
                    // The engines dropped our link: tell the client once, keep serving text.
                    engine_events = None;
                    let e = super::events::ErrorInfo::server("engine_failed", "the engines closed this session's link");
                    if let Err(end) = writer.send(&ServerEvent::Error(e)).await {
                        return end;
                    }
                }
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                turn.handle_timeout(std::time::Instant::now());
            }
        }
    }
    metrics.gauge_add(
        "antiphon_queue_depth",
        TRANSPORT,
        &[("queue", "engine_commands")],
        -queue_depth,
    );
    End::ClientGone
}

async fn recv_engine(
    rx: &mut Option<mpsc::Receiver<(std::time::Instant, EngineEvent)>>,
) -> Option<(std::time::Instant, EngineEvent)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<TokioInstant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn account(metrics: &Metrics, last: &mut TurnCounters, now: TurnCounters) {
    let stale = now.stale_outputs_dropped - last.stale_outputs_dropped;
    if stale > 0 {
        metrics.add(
            "antiphon_stale_outputs_dropped_total",
            TRANSPORT,
            &[],
            stale,
        );
    }
    let rejected = now.audio_bytes_rejected - last.audio_bytes_rejected;
    if rejected > 0 {
        metrics.add(
            "antiphon_dropped_frames_total",
            TRANSPORT,
            &[("reason", "input_buffer_full")],
            1,
        );
    }
    *last = now;
}

/// Sends every queued event and forwards every queued command.
async fn drain(
    turn: &mut TurnManager,
    writer: &mut Writer,
    commands: Option<&mpsc::Sender<EngineCommand>>,
) -> Result<(), End> {
    while let Some(out) = turn.poll_output() {
        match out {
            Output::Event(event) => {
                let sent = writer.send(&event).await?;
                if sent && let ServerEvent::AudioDelta { part, .. } = &event {
                    turn.audio_sent(std::time::Instant::now(), &part.response_id);
                }
            }
            Output::Command(cmd) => forward(cmd, commands, writer).await?,
        }
    }
    Ok(())
}

/// Hands a command to the engines without waiting. A full queue drops audio (counted) or
/// reports the engine as busy; the turn machine never blocks on an engine.
async fn forward(
    cmd: EngineCommand,
    commands: Option<&mpsc::Sender<EngineCommand>>,
    writer: &mut Writer,
) -> Result<(), End> {
    let Some(tx) = commands else {
        // Only reachable if `Engines` claims an engine without a link: a wiring bug.
        tracing::error!(?cmd, "engine command with no engine link");
        return Ok(());
    };
    match tx.try_send(cmd) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(EngineCommand::AsrAudio { .. })) => {
            writer.metrics.add(
                "antiphon_dropped_frames_total",
                TRANSPORT,
                &[("reason", "engine_queue_full")],
                1,
            );
            Ok(())
        }
        Err(mpsc::error::TrySendError::Full(cmd)) => {
            tracing::warn!(?cmd, "engine command queue full");
            let e = super::events::ErrorInfo::server(
                "engine_busy",
                "the engines are overloaded; try again",
            );
            writer.send(&ServerEvent::Error(e)).await.map(|_| ())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            let e = super::events::ErrorInfo::server("engine_failed", "the engine link is closed");
            writer.send(&ServerEvent::Error(e)).await.map(|_| ())
        }
    }
}
