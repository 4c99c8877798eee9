//! The per-session bridge: one tokio task between a session's task and the engine threads.
//!
//! The engines' session handles (`AsrSession`, `TtsStream`, `EngineSession`'s replies,
//! `DiarSlot`) are std-channel based; each was opened with a `Wake` (`antiphon_models::engine::wake`) that the engine thread
//! calls right after it delivers something to this session, which wakes this task through a
//! [`Notify`]. The task never runs model code (the engines do) and never polls on a timer:
//!
//! Loop: take every queued command (non-blocking), drain each engine handle without waiting,
//! forward what came out, then sleep until a command arrives or an engine wakes us. Two
//! waits have deadlines instead: text a full TTS queue held back, and a transcript final
//! held for its speaker label ([`super::asr::LABEL_WAIT`]); while either is pending the task
//! looks again after [`RETRY`].
//!
//! Queues (all bounded): commands in [`COMMAND_QUEUE`] (the session `try_send`s; when full,
//! input audio is dropped and counted there, other commands report `engine_busy`); events out
//! [`EVENT_QUEUE`]: the session task always drains it, and a session whose client stops
//! reading is closed by its send timeout, which drops the receiver and ends this task, so the
//! wait is bounded. While we wait, the engines' own bounded queues apply their policies (ASR
//! drops the oldest audio, TTS drops chunks for this stream, the LLM pauses only this reply).

use std::time::{Duration, Instant};

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use super::asr::AsrAdapter;
use super::llm::LlmAdapter;
use super::tts::TtsAdapter;
use crate::session::engine::{Engine, EngineCommand, EngineEvent, Epoch};

/// Commands waiting for the bridge (about 5 s of 20 ms audio frames).
pub const COMMAND_QUEUE: usize = 256;
/// Events waiting for the session task.
pub const EVENT_QUEUE: usize = 256;
/// How soon to look again while held-back TTS text or a label-waiting final is pending.
pub const RETRY: Duration = Duration::from_millis(5);

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
    /// Runs until the session drops its command sender or its event receiver. `wake` is
    /// the [`Notify`] behind the `Wake` the engine handles were opened with.
    pub async fn run(mut self, wake: Arc<Notify>) {
        let mut out = Vec::new();
        loop {
            loop {
                match self.commands.try_recv() {
                    Ok(cmd) => self.command(cmd, &mut out),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    // The session ended: dropping `self` frees every lease.
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            if let Some(a) = self.asr.as_mut() {
                a.poll(&mut out);
            }
            if let Some(l) = self.llm.as_mut() {
                l.poll(&mut out);
            }
            self.judge_pauses();
            if let Some(t) = self.tts.as_mut() {
                t.poll(&mut out);
            }
            if flush(&self.events, &mut out).await.is_err() {
                return;
            }
            let retry = self.tts.as_ref().is_some_and(|t| t.has_held_back())
                || self.asr.as_ref().is_some_and(|a| a.holds_a_final());
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd, &mut out),
                    None => return,
                },
                () = wake.notified() => {}
                () = tokio::time::sleep(RETRY), if retry => {}
            }
        }
    }

    /// The recogniser's pauses go to the LLM for their sentence-end probability (asked
    /// before the session hears of the pause, so the score runs ahead of a speculative reply
    /// on the same words), and the answers go back to the recogniser's judgement.
    fn judge_pauses(&mut self) {
        let (Some(asr), Some(llm)) = (self.asr.as_mut(), self.llm.as_mut()) else {
            return;
        };
        for (speech_end_ms, words) in asr.take_pauses_to_judge() {
            llm.judge_pause(speech_end_ms, &words);
        }
        for (speech_end_ms, sentence_end) in llm.take_verdicts() {
            asr.text_verdict(speech_end_ms, sentence_end);
        }
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
            EngineCommand::AsrConfigure(endpoint) => match self.asr.as_mut() {
                Some(a) => a.configure(endpoint).map_err(|m| (Engine::Asr, None, m)),
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
            EngineCommand::LlmLookahead { text } => {
                if let Some(l) = self.llm.as_mut() {
                    l.lookahead(&text);
                }
                Ok(())
            }
            EngineCommand::LlmWithdraw { epoch } => {
                if let Some(l) = self.llm.as_mut() {
                    l.withdraw(epoch);
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

/// Hands every event to the session, in order (waits while its queue is full).
async fn flush(
    events: &mpsc::Sender<(Instant, EngineEvent)>,
    out: &mut Vec<(Instant, EngineEvent)>,
) -> Result<(), Gone> {
    for ev in out.drain(..) {
        events.send(ev).await.map_err(|_| Gone)?;
    }
    Ok(())
}
