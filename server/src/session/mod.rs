//! One voice session, whatever carries it: a tokio task that owns a transport ([`SessionIo`]),
//! its [`TurnManager`] and its engine link. It waits on the transport, the engine-event inbox
//! and the turn machine's next deadline; after each input it drains the machine, hands events
//! to the transport and forwards commands. When the caller vanishes the task ends and drops
//! everything it owns (the admission permit, the engine link and so its slot leases).
//!
//! It knows no transport and no HTTP. Transports plug in as a [`SessionIo`]: the Realtime
//! WebSocket leg (`realtime::websocket`) directly, the others (Twilio, SIP, WebRTC) through
//! [`channel`], a pair of bounded channels.
//!
//! Map (sans-IO unless noted):
//! - [`turn`]: `TurnManager` (epochs, server_vad/manual turns, echo guard and barge-in,
//!   latency trace); consumes [`engine::EngineEvent`], emits server events and
//!   [`engine::EngineCommand`]s.
//! - [`engine`]: the command/event types between a session and the engines.
//! - [`conversation`]: items in order, truncate-to-played, `to_chat` for the LLM.
//! - [`events`]: client/server event types (the Realtime API's meaning, no wire names),
//!   session config, items, input limits.
//! - [`audio_format`]: transport audio (pcm16 24 kHz / G.711 8 kHz) <-> engine f32.
//! - this file (tokio): the per-call loop, [`run`].

pub mod audio_format;
pub mod channel;
pub mod conversation;
pub mod engine;
pub mod events;
pub mod turn;

use std::sync::Arc;
use std::time::Duration;

use antiphon_audio::frame::AudioFrame;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant as TokioInstant;
use tracing::Instrument;

use self::engine::{EngineCommand, EngineEvent, Engines};
use self::events::{ClientMessage, ErrorInfo, ServerEvent, SessionConfig};
use self::turn::{Output, TurnCounters, TurnManager, TurnSettings};
use crate::metrics::{Counter, Gauge, Histogram, Metrics};

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
    /// The voices the loaded TTS engines speak (empty: no TTS, any name is accepted).
    fn voices(&self) -> Vec<String> {
        Vec::new()
    }
    /// Each engine's failure state and lease use, by name (`asr`, `llm`, …), for `/healthz`
    /// and `/readyz`.
    fn health(&self) -> Vec<(&'static str, antiphon_models::engine::EngineHealth)> {
        Vec::new()
    }
}

/// Everything a session needs besides its transport.
pub struct SessionParams {
    pub session_id: String,
    /// The `transport` label of its metrics (`websocket`, `twilio`, `sip`, `webrtc`).
    pub transport: &'static str,
    pub initial: SessionConfig,
    pub engines: Engines,
    pub settings: TurnSettings,
    pub send_timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub link: Option<EngineLink>,
    /// Held for the session's life: frees an admission slot on drop.
    pub permit: OwnedSemaphorePermit,
    /// Turns true when a drain's grace runs out: the session tells its caller and ends.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Decrements the sessions gauge however the task ends (return, error or panic unwinding).
struct SessionGauge(Arc<Metrics>, &'static str);

impl SessionGauge {
    fn new(metrics: Arc<Metrics>, transport: &'static str) -> Self {
        metrics.gauge_add(Gauge::Sessions, transport, &[], 1);
        SessionGauge(metrics, transport)
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.gauge_add(Gauge::Sessions, self.1, &[], -1);
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The caller hung up or the connection broke.
    ClientGone,
    /// The caller stopped reading: a send waited longer than `send_timeout`.
    SendTimeout,
    /// Nothing came from the caller and no engine worked for the session for
    /// `server.idle_timeout_s`: its slot goes back to callers who use it.
    IdleTimeout,
    /// The server is shutting down and its drain grace ran out.
    ServerShutdown,
}

/// What a transport leg delivers from the caller.
#[derive(Debug)]
pub enum LegIn {
    /// Caller audio: f32 at the leg's own rate, `arrival` stamped where the leg read it from
    /// its socket (the latency origin of a turn is the arrival of its last voiced frame).
    Audio(AudioFrame),
    /// A Realtime client event (the WebSocket's and the WebRTC data channel's).
    Client(ClientMessage),
    /// After [`events::ServerEvent::StopPlayout`], a leg that plays audio out itself reports
    /// how much of `item_id` the caller heard; the session cuts the item to that if it is
    /// shorter than its own wall-clock estimate (a cut never grows an item back).
    Played { item_id: String, audio_end_ms: u32 },
    /// A DTMF key press (`0-9`, `*`, `#`, `A-D`): added to the conversation as user text.
    Dtmf(char),
    /// Input the transport could not turn into an event: answered with this error, session goes on.
    Invalid(ErrorInfo),
    /// The caller is gone.
    Closed,
}

/// A session's transport: where client events come from and server events go.
///
/// `recv` must be cancel-safe: the driver selects on it together with engine events and
/// timers, and drops the future when another branch wins.
pub trait SessionIo: Send {
    fn recv(&mut self) -> impl Future<Output = LegIn> + Send;
    /// Delivers one server event. `Ok(true)` when it reached the caller (for audio: was
    /// handed to the transport's playout), `Ok(false)` when this transport does not carry it.
    fn send(&mut self, event: &ServerEvent) -> impl Future<Output = Result<bool, End>> + Send;
    /// Called once when the session ends, before the transport is dropped: a transport that
    /// can say why it closes (a WebSocket Close frame) does so here.
    fn finish(&mut self, _end: End) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Sends one event and counts it.
struct Writer<Io> {
    io: Io,
    transport: &'static str,
    metrics: Arc<Metrics>,
}

impl<Io: SessionIo> Writer<Io> {
    async fn send(&mut self, event: &ServerEvent) -> Result<bool, End> {
        let sent = self.io.send(event).await?;
        if sent {
            record(&self.metrics, self.transport, event);
        }
        Ok(sent)
    }
}

fn record(metrics: &Metrics, transport: &'static str, event: &ServerEvent) {
    match event {
        ServerEvent::ResponseCreated(_) => metrics.add(Counter::Turns, transport, &[], 1),
        ServerEvent::ResponseDone(r) if r.status == events::ResponseStatus::Cancelled => {
            metrics.add(Counter::ResponsesCancelled, transport, &[], 1)
        }
        ServerEvent::Error(e) => metrics.add(Counter::Errors, transport, &[("code", e.code)], 1),
        ServerEvent::TurnLatency(t) => {
            for (stage, v) in [
                ("asr_final", t.asr_final_ms),
                ("llm_first_token", t.llm_first_token_ms),
                ("first_clause", t.first_clause_ms),
                ("tts_first_audio", t.tts_first_audio_ms),
                ("first_audio_sent", t.first_audio_sent_ms),
                ("speculation_started", t.speculation_started_ms),
            ] {
                if let Some(ms) = v.filter(|ms| *ms >= 0.0) {
                    metrics.observe(
                        Histogram::TurnLatency,
                        transport,
                        &[("stage", stage)],
                        Duration::from_secs_f64(ms / 1000.0),
                    );
                }
            }
        }
        _ => {}
    }
}

/// Runs a session over `io` to its end.
pub async fn run<Io: SessionIo>(io: Io, params: SessionParams) -> End {
    let span = tracing::info_span!(
        "session",
        id = %params.session_id,
        transport = params.transport
    );
    async move {
        tracing::info!("session opened");
        let end = drive(io, params).await;
        tracing::info!(reason = ?end, "session closed");
        end
    }
    .instrument(span)
    .await
}

async fn drive<Io: SessionIo>(io: Io, params: SessionParams) -> End {
    let SessionParams {
        transport,
        initial,
        engines,
        settings,
        metrics,
        link,
        permit,
        mut shutdown,
        ..
    } = params;
    let _permit = permit;
    let _gauge = SessionGauge::new(metrics.clone(), transport);
    let mut writer = Writer {
        io,
        transport,
        metrics: metrics.clone(),
    };
    let (commands, mut engine_events) = match link {
        Some(l) => (Some(l.commands), Some(l.events)),
        None => (None, None),
    };
    let idle_after = settings.idle_timeout;
    let mut last_activity = TokioInstant::now();
    let mut turn = TurnManager::new(initial, engines, settings);
    let mut counters = TurnCounters::default();
    let mut queue_depth: i64 = 0;
    let end = loop {
        if let Err(end) = drain(&mut turn, &mut writer, commands.as_ref()).await {
            break end;
        }
        let now_counters = turn.counters();
        account(&metrics, transport, &mut counters, now_counters);
        if let Some(tx) = &commands {
            let depth = (tx.max_capacity() - tx.capacity()) as i64;
            metrics.gauge_add(
                Gauge::QueueDepth,
                transport,
                &[("queue", "engine_commands")],
                depth - queue_depth,
            );
            queue_depth = depth;
        }

        let deadline = turn.poll_timeout().map(TokioInstant::from_std);
        let idle_deadline = idle_after.map(|d| last_activity + d);
        tokio::select! {
            inbound = writer.io.recv() => {
                last_activity = TokioInstant::now();
                match inbound {
                    LegIn::Closed => break End::ClientGone,
                    LegIn::Client(m) => {
                        let span = tracing::debug_span!("client_event", event_id = ?m.event_id);
                        let _g = span.enter();
                        turn.handle_client(std::time::Instant::now(), m);
                    }
                    LegIn::Audio(frame) => turn.handle_audio(frame),
                    LegIn::Played { item_id, audio_end_ms } => turn.handle_played(&item_id, audio_end_ms),
                    LegIn::Dtmf(key) => {
                        metrics.add(Counter::Dtmf, transport, &[], 1);
                        turn.handle_dtmf(key);
                    }
                    LegIn::Invalid(e) => {
                        tracing::debug!(code = e.code, message = %e.message, "rejected client input");
                        if let Err(end) = writer.send(&ServerEvent::Error(e)).await {
                            break end;
                        }
                    }
                }
            }
            ev = recv_engine(&mut engine_events) => {
                last_activity = TokioInstant::now();
                match ev {
                    Some((at, e)) => turn.handle_engine(at, e),
                    None => {
                        // The engines dropped our link: tell the client once, keep serving text.
                        engine_events = None;
                        let e = ErrorInfo::server("engine_failed", "the engines closed this session's link");
                        if let Err(end) = writer.send(&ServerEvent::Error(e)).await {
                            break end;
                        }
                    }
                }
            }
            () = sleep_until(deadline), if deadline.is_some() => {
                turn.handle_timeout(std::time::Instant::now());
            }
            () = sleep_until(idle_deadline), if idle_deadline.is_some() => {
                let secs = idle_after.map_or(0, |d| d.as_secs());
                let e = ErrorInfo::invalid_request(
                    "session_idle_timeout",
                    format!("nothing from the client for {secs} s: the session is closed"),
                );
                // Best effort: the client may be long gone.
                let _ = writer.send(&ServerEvent::Error(e)).await;
                break End::IdleTimeout;
            }
            () = crate::drain::grace_over(&mut shutdown) => {
                let e = ErrorInfo::server(
                    "server_shutting_down",
                    "the server is shutting down and its drain grace period is over: \
                     the session is closed; connect again to continue",
                );
                let _ = writer.send(&ServerEvent::Error(e)).await;
                break End::ServerShutdown;
            }
        }
    };
    writer.io.finish(end).await;
    metrics.gauge_add(
        Gauge::QueueDepth,
        transport,
        &[("queue", "engine_commands")],
        -queue_depth,
    );
    end
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

fn account(metrics: &Metrics, transport: &'static str, last: &mut TurnCounters, now: TurnCounters) {
    let stale = now.stale_outputs_dropped - last.stale_outputs_dropped;
    if stale > 0 {
        metrics.add(Counter::StaleOutputsDropped, transport, &[], stale);
    }
    for (outcome, n) in [
        (
            "started",
            now.speculations_started - last.speculations_started,
        ),
        (
            "adopted",
            now.speculations_adopted - last.speculations_adopted,
        ),
        (
            "withdrawn",
            now.speculations_withdrawn - last.speculations_withdrawn,
        ),
    ] {
        if n > 0 {
            metrics.add(Counter::Speculations, transport, &[("outcome", outcome)], n);
        }
    }
    for (verdict, n) in [
        ("done", now.turns_judged_done - last.turns_judged_done),
        (
            "not_done",
            now.turns_judged_not_done - last.turns_judged_not_done,
        ),
        ("vetoed", now.turns_judged_vetoed - last.turns_judged_vetoed),
    ] {
        if n > 0 {
            metrics.add(
                Counter::TurnJudgements,
                transport,
                &[("verdict", verdict)],
                n,
            );
        }
    }
    let merged = now.turns_merged - last.turns_merged;
    if merged > 0 {
        metrics.add(Counter::TurnsMerged, transport, &[], merged);
    }
    let dropped_ms = now.input_audio_dropped_ms - last.input_audio_dropped_ms;
    if dropped_ms > 0 {
        metrics.add(
            Counter::AudioDroppedSeconds,
            transport,
            &[("engine", "asr")],
            dropped_ms,
        );
    }
    let rejected = now.audio_bytes_rejected - last.audio_bytes_rejected;
    if rejected > 0 {
        metrics.add(
            Counter::DroppedFrames,
            transport,
            &[("reason", "input_buffer_full")],
            1,
        );
    }
    *last = now;
}

/// Sends every queued event and forwards every queued command.
async fn drain<Io: SessionIo>(
    turn: &mut TurnManager,
    writer: &mut Writer<Io>,
    commands: Option<&mpsc::Sender<EngineCommand>>,
) -> Result<(), End> {
    while let Some(out) = turn.poll_output() {
        match out {
            Output::Event(event) => {
                let sent = writer.send(&event).await?;
                if sent
                    && let ServerEvent::AudioDelta { part, .. } | ServerEvent::AudioOut { part, .. } =
                        &event
                {
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
async fn forward<Io: SessionIo>(
    cmd: EngineCommand,
    commands: Option<&mpsc::Sender<EngineCommand>>,
    writer: &mut Writer<Io>,
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
                Counter::DroppedFrames,
                writer.transport,
                &[("reason", "engine_queue_full")],
                1,
            );
            Ok(())
        }
        Err(mpsc::error::TrySendError::Full(cmd)) => {
            tracing::warn!(?cmd, "engine command queue full");
            let e = ErrorInfo::server("engine_busy", "the engines are overloaded; try again");
            writer.send(&ServerEvent::Error(e)).await.map(|_| ())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            let e = ErrorInfo::server("engine_failed", "the engine link is closed");
            writer.send(&ServerEvent::Error(e)).await.map(|_| ())
        }
    }
}
