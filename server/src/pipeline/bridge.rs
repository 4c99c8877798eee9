//! The per-session bridge: one named OS thread between a session's tokio task and the engine
//! threads.
//!
//! Why a thread per session: the engines' session handles (`AsrSession`, `TtsStream`,
//! `ReplyStream`) are std-channel based and not shareable, and a session needs all three at
//! once, so one owner polls them all. It never runs model code (the engines do), it only moves
//! messages, so a thread per session costs a stack and a few wake-ups, not CPU.
//!
//! Loop: take every queued command (non-blocking `try_recv` on the tokio channel), poll each
//! engine handle without waiting, forward what came out; sleep [`IDLE_POLL`] only when a whole
//! pass found nothing. So an idle pass adds at most 2 ms to any hop, and a busy session is
//! served back to back.
//!
//! Queues (all bounded): commands in [`COMMAND_QUEUE`] (the session `try_send`s; when full,
//! input audio is dropped and counted there, other commands report `engine_busy`); events out
//! [`EVENT_QUEUE`] with `blocking_send`: the session task always drains it, and a session whose
//! client stops reading is closed by its send timeout, which drops the receiver and ends this
//! thread, so the wait is bounded. While we wait, the engines' own bounded queues apply their
//! policies (ASR drops the oldest audio, TTS drops chunks for this stream, the LLM pauses only
//! this reply).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::asr::AsrAdapter;
use super::llm::LlmAdapter;
use super::tts::TtsAdapter;
use crate::session::engine::{Engine, EngineCommand, EngineEvent, Epoch};
use antiphon_models::vad::endpoint::EndpointConfig;

/// Commands waiting for the bridge (about 5 s of 20 ms audio frames).
pub const COMMAND_QUEUE: usize = 256;
/// Events waiting for the session task.
pub const EVENT_QUEUE: usize = 256;
/// Sleep after a pass that found nothing to do.
pub const IDLE_POLL: Duration = Duration::from_millis(2);

pub struct Bridge {
    pub commands: mpsc::Receiver<EngineCommand>,
    pub events: mpsc::Sender<(Instant, EngineEvent)>,
    pub asr: Option<AsrAdapter>,
    pub llm: Option<LlmAdapter>,
    pub tts: Option<TtsAdapter>,
}

/// The session is gone: stop.
struct Gone;

impl Bridge {
    pub fn run(mut self) {
        let mut out = Vec::new();
        loop {
            let mut busy = false;
            loop {
                match self.commands.try_recv() {
                    Ok(cmd) => {
                        busy = true;
                        self.command(cmd, &mut out);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    // The session ended: dropping `self` frees every lease.
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            if let Some(a) = self.asr.as_mut() {
                busy |= a.poll(&mut out);
            }
            if let Some(l) = self.llm.as_mut() {
                busy |= l.poll(&mut out);
            }
            if let Some(t) = self.tts.as_mut() {
                busy |= t.poll(&mut out);
            }
            if self.flush(&mut out).is_err() {
                return;
            }
            if !busy {
                std::thread::sleep(IDLE_POLL);
            }
        }
    }

    fn flush(&self, out: &mut Vec<(Instant, EngineEvent)>) -> Result<(), Gone> {
        for ev in out.drain(..) {
            self.events.blocking_send(ev).map_err(|_| Gone)?;
        }
        Ok(())
    }

    fn command(&mut self, cmd: EngineCommand, out: &mut Vec<(Instant, EngineEvent)>) {
        let fail = |engine: Engine, epoch: Option<Epoch>, message: String| {
            (
                Instant::now(),
                EngineEvent::Failed {
                    engine,
                    epoch,
                    message,
                },
            )
        };
        let missing = |engine: Engine| format!("the {} engine is not loaded", engine.as_str());
        let result: Result<(), (Engine, Option<Epoch>, String)> = match cmd {
            EngineCommand::AsrAudio { samples, arrival } => match self.asr.as_mut() {
                Some(a) => a
                    .push(&samples, arrival)
                    .map_err(|m| (Engine::Asr, None, m)),
                None => Err((Engine::Asr, None, missing(Engine::Asr))),
            },
            EngineCommand::AsrCommit => match self.asr.as_mut() {
                Some(a) => a.commit().map_err(|m| (Engine::Asr, None, m)),
                None => Err((Engine::Asr, None, missing(Engine::Asr))),
            },
            EngineCommand::AsrReset => match self.asr.as_mut() {
                Some(a) => a.reset().map_err(|m| (Engine::Asr, None, m)),
                None => Ok(()),
            },
            EngineCommand::AsrConfigure {
                threshold,
                prefix_padding_ms,
                silence_duration_ms,
            } => match self.asr.as_mut() {
                Some(a) => a
                    .configure(EndpointConfig {
                        threshold,
                        prefix_padding_ms,
                        silence_duration_ms,
                    })
                    .map_err(|m| (Engine::Asr, None, m)),
                None => Ok(()),
            },
            EngineCommand::LlmPrepare { messages } => {
                if let Some(l) = self.llm.as_mut() {
                    l.prepare(&messages);
                }
                Ok(())
            }
            EngineCommand::LlmStart {
                epoch,
                messages,
                max_tokens,
            } => match self.llm.as_mut() {
                Some(l) => l
                    .start(epoch, &messages, max_tokens)
                    .map_err(|m| (Engine::Llm, Some(epoch), m)),
                None => Err((Engine::Llm, Some(epoch), missing(Engine::Llm))),
            },
            EngineCommand::LlmCancel { epoch } => {
                if let Some(l) = self.llm.as_mut() {
                    l.cancel(epoch);
                }
                Ok(())
            }
            EngineCommand::TtsText { epoch, text, voice } => match self.tts.as_mut() {
                Some(t) => t
                    .text(epoch, &text, &voice)
                    .map_err(|m| (Engine::Tts, Some(epoch), m)),
                None => Err((Engine::Tts, Some(epoch), missing(Engine::Tts))),
            },
            EngineCommand::TtsFinish { epoch } => match self.tts.as_mut() {
                Some(t) => t.finish(epoch).map_err(|m| (Engine::Tts, Some(epoch), m)),
                None => Err((Engine::Tts, Some(epoch), missing(Engine::Tts))),
            },
            EngineCommand::TtsCancel { epoch } => {
                if let Some(t) = self.tts.as_mut() {
                    t.cancel(epoch);
                }
                Ok(())
            }
        };
        if let Err((engine, epoch, message)) = result {
            out.push(fail(engine, epoch, message));
        }
    }
}
