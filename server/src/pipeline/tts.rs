//! TTS side of a session's bridge: one [`TtsStream`] per session, fed text by reply epoch.
//!
//! Epoch mapping: the turn machine numbers replies (its epochs); the stream has its own epoch
//! that only `cancel` bumps. The adapter remembers which turn epoch the stream is speaking
//! (`active`); a cancel, or text for another epoch while one is unfinished, cancels the
//! stream first, so its stale chunks are dropped by the stream itself and every chunk that
//! reaches us belongs to `active`.
//!
//! First clause: the stream chunks its own text, so the adapter watches its
//! `reply_chunks_sent` counter and reports the instant the reply's first chunk went to the
//! engine as [`EngineEvent::TtsClause`] (the latency trace's "first clause" stage).

use std::sync::Arc;
use std::time::Instant;

use antiphon_models::tts::{TtsEngine, TtsError, TtsEvent, TtsStream};

use crate::realtime::turn::{Engine, EngineEvent, Epoch};

pub struct TtsAdapter {
    engine: Arc<TtsEngine>,
    stream: TtsStream,
    voice: String,
    /// The reply the stream is speaking; `None` between replies.
    active: Option<Epoch>,
    /// The active reply has spoken some text already (chunk texts come trimmed: later ones
    /// get a space in front so the transcript reads as the LLM wrote it).
    spoke: bool,
    /// The active reply's first clause is known to have gone to the engine.
    clause_seen: bool,
    /// When it went, until `poll` reports it.
    clause_at: Option<(Epoch, Instant)>,
}

/// A full engine queue only delays text (the stream keeps it and retries on every poll).
fn queued(r: Result<(), TtsError>) -> Result<(), String> {
    match r {
        Ok(()) | Err(TtsError::QueueFull) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

impl TtsAdapter {
    pub fn new(engine: Arc<TtsEngine>, stream: TtsStream, voice: String) -> Self {
        TtsAdapter {
            engine,
            stream,
            voice,
            active: None,
            spoke: false,
            clause_seen: false,
            clause_at: None,
        }
    }

    /// Notes the instant the active reply's first chunk left for the engine.
    fn watch_clause(&mut self) {
        if let Some(epoch) = self.active
            && !self.clause_seen
            && self.stream.reply_chunks_sent() > 0
        {
            self.clause_seen = true;
            self.clause_at = Some((epoch, Instant::now()));
        }
    }

    fn begin(&mut self, epoch: Epoch, voice: &str) -> Result<(), String> {
        if self.active == Some(epoch) {
            return Ok(());
        }
        if self.active.is_some() {
            self.stream.cancel();
        }
        // Session voices this engine does not have (e.g. OpenAI names) keep the server's.
        if voice != self.voice && self.engine.voices().iter().any(|v| v == voice) {
            self.stream = self.engine.open_stream(voice).map_err(|e| e.to_string())?;
            self.voice = voice.to_string();
        }
        self.active = Some(epoch);
        self.spoke = false;
        self.clause_seen = false;
        self.clause_at = None;
        Ok(())
    }

    pub fn text(&mut self, epoch: Epoch, text: &str, voice: &str) -> Result<(), String> {
        self.begin(epoch, voice)?;
        let result = queued(self.stream.push_text(text));
        self.watch_clause();
        result
    }

    pub fn finish(&mut self, epoch: Epoch) -> Result<(), String> {
        if self.active.is_none() {
            // A reply with no text at all still needs its end marker.
            let voice = self.voice.clone();
            self.begin(epoch, &voice)?;
        }
        if self.active != Some(epoch) {
            return Ok(());
        }
        let result = queued(self.stream.finish());
        self.watch_clause();
        result
    }

    pub fn cancel(&mut self, epoch: Epoch) {
        if self.active == Some(epoch) {
            self.stream.cancel();
            self.active = None;
            self.clause_at = None;
        }
    }

    /// Moves every ready chunk to `out`; true if there was any.
    pub fn poll(&mut self, out: &mut Vec<(Instant, EngineEvent)>) -> bool {
        let mut any = false;
        loop {
            let received = self.stream.try_recv();
            // `try_recv` retries chunks a full engine queue held back.
            self.watch_clause();
            if let Some((epoch, at)) = self.clause_at.take() {
                out.push((at, EngineEvent::TtsClause { epoch }));
                any = true;
            }
            let event = match received {
                Ok(Some(e)) => e,
                Ok(None) => return any,
                Err(e) => {
                    out.push((
                        Instant::now(),
                        EngineEvent::Failed {
                            engine: Engine::Tts,
                            epoch: self.active.take(),
                            message: e.to_string(),
                        },
                    ));
                    return true;
                }
            };
            any = true;
            let now = Instant::now();
            let Some(epoch) = self.active else {
                // Only possible for a reply that already ended: nothing listens for it.
                continue;
            };
            match event {
                TtsEvent::Audio(chunk) => {
                    let mut text = chunk.text;
                    if !text.is_empty() {
                        if self.spoke {
                            text.insert(0, ' ');
                        }
                        self.spoke = true;
                    }
                    if !chunk.samples.is_empty() || !text.is_empty() {
                        out.push((
                            now,
                            EngineEvent::TtsAudio {
                                epoch,
                                samples: chunk.samples,
                                rate: chunk.sample_rate,
                                text,
                            },
                        ));
                    }
                    if chunk.last {
                        self.active = None;
                        out.push((now, EngineEvent::TtsDone { epoch }));
                    }
                }
                TtsEvent::Failed { error, .. } => out.push((
                    now,
                    EngineEvent::Failed {
                        engine: Engine::Tts,
                        epoch: Some(epoch),
                        message: error,
                    },
                )),
            }
        }
    }
}
