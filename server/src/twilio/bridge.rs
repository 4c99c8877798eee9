//! The tokio task of one Twilio call: reads the Media Streams WebSocket, runs the [`Call`]
//! state machine, and carries its steps to a channel session and back to Twilio.
//!
//! No session exists until `start` has arrived and the call is authenticated and admitted;
//! a socket that sends no `start` within [`START_TIMEOUT`] is closed. Bad input is logged (the
//! first [`LOGGED_REJECTIONS`] per call) and counted in `antiphon_twilio_protocol_errors_total`
//! by code; it never ends the call except where noted (unsupported media format).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use antiphon_audio::frame::AudioFrame;
use antiphon_audio::g711::Law;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::Instrument;

use super::call::{Call, CallError, Step};
use super::codec::{self, StartInfo, TwilioOutbound};
use super::{KEY_PARAMETER, MAX_MESSAGE_BYTES, TRANSPORT_LABEL};
use crate::app::AppState;
use crate::auth::ApiKeys;
use crate::metrics::Counter;
use crate::session::LegIn;
use crate::session::audio_format::OutputEncoder;
use crate::session::channel::{self, SessionChannels};
use crate::session::events::{AudioFormat, ServerEvent, Transcription};

/// How long a new socket may take to send `start`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Rejected messages logged per call; the rest are only counted.
pub const LOGGED_REJECTIONS: u32 = 20;

/// Rejected messages tolerated before `start`: past this the socket is not a Twilio stream.
const MAX_REJECTIONS_BEFORE_START: u32 = 50;

/// How the call proves it may use the server.
pub enum Auth {
    /// A key offered with the upgrade request was accepted.
    Accepted,
    /// Check the `api_key` custom parameter of `start`.
    AtStart(ApiKeys),
}

// WebSocket close codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_UNSUPPORTED: u16 = 1003;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TRY_AGAIN: u16 = 1013;

struct Bridge {
    state: Arc<AppState>,
    sink: SplitSink<WebSocket, Message>,
    call: Call,
    session: Option<SessionChannels>,
    send_timeout: Duration,
    rejections: u32,
    /// Caller audio samples passed to the session so far (its media clock).
    media_samples: u64,
    /// Reply audio -> 8 kHz mu-law.
    encoder: OutputEncoder,
    /// Caller input the session's queue had no room for, in order. While it holds
    /// [`BACKLOG_PAUSE`] items the socket is not read (TCP pushes back on Twilio), so a burst
    /// (of DTMF, say) waits instead of being dropped.
    backlog: VecDeque<LegIn>,
}

/// Stop reading the socket while this much caller input waits for the session.
const BACKLOG_PAUSE: usize = 64;

/// Why the call's loop ended.
enum Finish {
    /// Twilio sent `stop`.
    Stopped,
    /// The socket closed or broke without `stop`.
    Disconnected,
    /// We end the call: close the socket with this code and reason.
    Close(u16, String),
    /// The session ended by itself.
    SessionEnded,
}

/// Runs one call to its end. Spawned by the HTTP layer after the upgrade.
pub async fn run(socket: WebSocket, state: Arc<AppState>, auth: Auth) {
    let span = tracing::info_span!("twilio", call = tracing::field::Empty);
    async move {
        let (sink, mut stream) = socket.split();
        let send_timeout = Duration::from_millis(state.config.server.send_timeout_ms);
        let mut b = Bridge {
            state,
            sink,
            call: Call::new(),
            session: None,
            send_timeout,
            rejections: 0,
            media_samples: 0,
            encoder: OutputEncoder::new(AudioFormat::G711Ulaw),
            backlog: VecDeque::new(),
        };
        let start_deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let finish = loop {
            let before_start = b.session.is_none();
            // A sender only while input waits, so the branch below sleeps otherwise.
            let room = match (&b.session, b.backlog.is_empty()) {
                (Some(s), false) => Some(s.to_session.clone()),
                _ => None,
            };
            tokio::select! {
                permit = reserve(room.clone()), if room.is_some() => match permit {
                    Some(permit) => {
                        if let Some(input) = b.backlog.pop_front() {
                            permit.send(input);
                        }
                    }
                    // The session is gone: its closed event channel ends the loop.
                    None => b.backlog.clear(),
                },
                msg = stream.next(), if b.backlog.len() < BACKLOG_PAUSE => {
                    let arrival = Instant::now();
                    let text = match msg {
                        None | Some(Ok(Message::Close(_))) => break Finish::Disconnected,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "Twilio WebSocket read failed");
                            match crate::realtime::websocket::close_for_read_error(&e) {
                                Some(frame) => break Finish::Close(frame.code, frame.reason.to_string()),
                                None => break Finish::Disconnected,
                            }
                        }
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Binary(_))) => {
                            b.reject(&CallError { code: "binary_frame", message: "binary WebSocket message; Media Streams messages are JSON text".into() });
                            continue;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    };
                    let steps = match codec::decode(text.as_str(), MAX_MESSAGE_BYTES) {
                        Ok(m) => b.call.on_twilio(m),
                        Err(e) => vec![Step::Rejected(CallError { code: e.code(), message: e.to_string() })],
                    };
                    if let Some(f) = b.apply(steps, &auth, arrival).await {
                        break f;
                    }
                    if before_start && b.session.is_none() && b.rejections > MAX_REJECTIONS_BEFORE_START {
                        break Finish::Close(CLOSE_POLICY, "not a Media Stream".into());
                    }
                }
                ev = recv_session(&mut b.session) => {
                    let Some(ev) = ev else { break Finish::SessionEnded };
                    log_session_event(&ev);
                    // Reply audio arrives as f32: encoded here, once, to Twilio's mu-law.
                    let ev = match ev {
                        ServerEvent::AudioOut { part, frame } => match b.encoder.encode(&frame.samples, frame.sample_rate) {
                            Ok(audio) => ServerEvent::AudioDelta { part, audio },
                            Err(e) => {
                                tracing::warn!(error = %e, "reply audio unusable");
                                continue;
                            }
                        },
                        other => other,
                    };
                    let steps = b.call.on_server(&ev);
                    if let Some(f) = b.apply(steps, &auth, Instant::now()).await {
                        break f;
                    }
                }
                () = tokio::time::sleep_until(start_deadline), if before_start => {
                    b.reject(&CallError { code: "start_timeout", message: format!("no 'start' within {} s", START_TIMEOUT.as_secs()) });
                    break Finish::Close(CLOSE_POLICY, "no start message".into());
                }
            }
        };
        b.finish(finish).await;
    }
    .instrument(span)
    .await
}

/// Room for one input in the session's queue (`None` once the session is gone).
async fn reserve(room: Option<mpsc::Sender<LegIn>>) -> Option<mpsc::OwnedPermit<LegIn>> {
    room?.reserve_owned().await.ok()
}

async fn recv_session(session: &mut Option<SessionChannels>) -> Option<ServerEvent> {
    match session {
        Some(s) => s.from_session.recv().await,
        None => std::future::pending().await,
    }
}

impl Bridge {
    /// Carries out the machine's steps; `Some` when the call must end.
    /// `arrival`: when the message that produced the steps was read from the socket.
    async fn apply(&mut self, steps: Vec<Step>, auth: &Auth, arrival: Instant) -> Option<Finish> {
        for step in steps {
            match step {
                Step::Started(start) => {
                    if let Err(f) = self.open_session(start, auth) {
                        return Some(f);
                    }
                }
                Step::Audio(codes) => {
                    let mut samples = Vec::with_capacity(codes.len());
                    Law::Mu.decode(&codes, &mut samples);
                    let frame = AudioFrame::new(samples, 8000, self.media_samples, arrival);
                    self.media_samples += codes.len() as u64;
                    self.send_to_session(LegIn::Audio(frame));
                }
                Step::Played {
                    item_id,
                    audio_end_ms,
                } => self.send_to_session(LegIn::Played {
                    item_id,
                    audio_end_ms,
                }),
                Step::ToTwilio(message) => {
                    if let Err(f) = self.send_to_twilio(&message).await {
                        return Some(f);
                    }
                }
                Step::Dtmf(digit) => {
                    tracing::info!(%digit, "DTMF");
                    // Counted by the session when it gets the key.
                    self.send_to_session(LegIn::Dtmf(digit));
                }
                Step::BargeIn {
                    item_id,
                    heard_ms,
                    dropped_ms,
                } => {
                    tracing::info!(%item_id, heard_ms, dropped_ms, "barge-in: cleared Twilio's playout");
                    self.state
                        .metrics
                        .add(Counter::PlayoutClears, TRANSPORT_LABEL, &[], 1);
                }
                Step::Stopped => return Some(Finish::Stopped),
                Step::Rejected(e) => self.reject(&e),
                Step::Fatal(e) => {
                    self.reject(&e);
                    return Some(Finish::Close(CLOSE_UNSUPPORTED, e.message));
                }
            }
        }
        None
    }

    fn open_session(&mut self, start: StartInfo, auth: &Auth) -> Result<(), Finish> {
        tracing::Span::current().record("call", start.call_sid.as_str());
        let refuse = |state: &AppState, reason: &str| {
            state.metrics.add(
                Counter::SessionsRefused,
                TRANSPORT_LABEL,
                &[("reason", reason)],
                1,
            );
        };
        if let Auth::AtStart(keys) = auth {
            match start.custom_parameters.get(KEY_PARAMETER) {
                Some(k) if keys.accepts(k) => {}
                offered => {
                    let why = if offered.is_some() {
                        "incorrect API key in customParameters.api_key"
                    } else {
                        "missing API key: add <Parameter name=\"api_key\" value=\"KEY\"/> to the <Stream>"
                    };
                    tracing::info!(stream = %start.stream_sid, "call refused: {why}");
                    refuse(&self.state, "auth");
                    return Err(Finish::Close(CLOSE_POLICY, why.into()));
                }
            }
        }
        let mut params = self
            .state
            .admit(
                TRANSPORT_LABEL,
                (AudioFormat::G711Ulaw, AudioFormat::G711Ulaw),
            )
            .map_err(|r| {
                tracing::warn!(code = r.code, "call refused: {}", r.message);
                Finish::Close(CLOSE_TRY_AGAIN, r.message)
            })?;
        // Caller transcripts go to the log (and the session emits them as events).
        params.initial.transcription = Some(Transcription {
            model: None,
            language: None,
        });
        tracing::info!(
            stream = %start.stream_sid,
            session = %params.session_id,
            parameters = start.custom_parameters.len(),
            "call started"
        );
        self.session = Some(channel::spawn(params));
        Ok(())
    }

    /// Never waits (the loop also drains the session's events) and never drops: what the
    /// session's queue has no room for waits in the backlog, in order.
    fn send_to_session(&mut self, inbound: LegIn) {
        let Some(s) = &self.session else {
            return;
        };
        if !self.backlog.is_empty() {
            self.backlog.push_back(inbound);
            return;
        }
        match s.to_session.try_send(inbound) {
            Ok(()) => {}
            Err(TrySendError::Full(inbound)) => self.backlog.push_back(inbound),
            // The session ended; its channel closing ends the loop.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    async fn send_to_twilio(&mut self, message: &TwilioOutbound) -> Result<(), Finish> {
        let text = codec::encode(message);
        match tokio::time::timeout(
            self.send_timeout,
            self.sink.send(Message::Text(text.into())),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Finish::Disconnected),
            Err(_) => {
                tracing::warn!("Twilio stopped reading: send timed out");
                Err(Finish::Close(CLOSE_TRY_AGAIN, "send timed out".into()))
            }
        }
    }

    fn reject(&mut self, e: &CallError) {
        self.rejections += 1;
        self.state.metrics.add(
            Counter::TwilioProtocolErrors,
            TRANSPORT_LABEL,
            &[("code", e.code)],
            1,
        );
        if self.rejections <= LOGGED_REJECTIONS {
            tracing::warn!(code = e.code, "bad Twilio input: {}", e.message);
        } else if self.rejections == LOGGED_REJECTIONS + 1 {
            tracing::warn!("more bad Twilio input on this call: now only counted");
        }
    }

    async fn finish(mut self, finish: Finish) {
        let close = match finish {
            Finish::Stopped => {
                tracing::info!(
                    unplayed_ms = self.call.unplayed_ms(),
                    "stream stopped by Twilio"
                );
                Some((CLOSE_NORMAL, String::new()))
            }
            Finish::Disconnected => {
                if self.call.stream_sid().is_some() {
                    self.reject(&CallError {
                        code: "disconnect_without_stop",
                        message: "the WebSocket closed without a 'stop' message".into(),
                    });
                }
                None
            }
            Finish::Close(code, reason) => Some((code, reason)),
            Finish::SessionEnded => {
                tracing::warn!("session ended before the call");
                Some((CLOSE_NORMAL, "session ended".into()))
            }
        };
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: reason.chars().take(120).collect::<String>().into(),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.sink.send(Message::Close(Some(frame))),
            )
            .await;
        }
        if let Some(s) = self.session.take() {
            // Dropping both ends hangs the session up at once.
            drop(s.to_session);
            drop(s.from_session);
            match tokio::time::timeout(Duration::from_secs(5), s.task).await {
                Ok(Ok(end)) => tracing::info!(?end, "call ended"),
                Ok(Err(e)) => tracing::error!(%e, "session task failed"),
                Err(_) => tracing::warn!("session did not end within 5 s"),
            }
        }
    }
}

fn log_session_event(ev: &ServerEvent) {
    match ev {
        ServerEvent::TranscriptionCompleted { transcript, .. } => {
            tracing::info!(%transcript, "caller said")
        }
        ServerEvent::TranscriptDone { transcript, .. } => {
            tracing::info!(%transcript, "agent said")
        }
        ServerEvent::Error(e) => {
            tracing::warn!(code = e.code, "session error: {}", e.message)
        }
        ServerEvent::ItemTruncated {
            item_id,
            audio_end_ms,
            ..
        } => tracing::info!(%item_id, audio_end_ms, "reply truncated"),
        _ => {}
    }
}
