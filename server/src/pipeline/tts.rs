//! TTS side of a session's bridge: one [`TtsStream`] per session, fed text by reply epoch.
//!
//! Epoch mapping: the turn machine numbers replies (its epochs); the stream has its own epoch
//! that only `cancel` bumps. The adapter remembers which turn epoch the stream is speaking
//! (`active`); a cancel, or text for another epoch while one is unfinished, cancels the
//! stream first, so its stale chunks are dropped by the stream itself and every chunk that
//! reaches us belongs to `active`.
//!
//! Voices: the server may load several engines (`[tts] extra_models`); a session's `voice`
//! picks the engine that has it, so Piper and Kokoro sessions share one server.
//!
//! First clause: the stream chunks its own text, so the adapter watches its
//! `reply_chunks_sent` counter and reports the instant the reply's first chunk went to the
//! engine as [`EngineEvent::TtsClause`] (the latency trace's "first clause" stage).

use antiphon_models::engine::wake::Wake;
use std::sync::Arc;
use std::time::Instant;

use antiphon_models::tts::{TtsEngine, TtsError, TtsEvent, TtsStream};

use crate::session::engine::{Engine, EngineEvent, Epoch};

pub struct TtsAdapter {
    /// Every loaded engine, the server's default first.
    engines: Arc<[Arc<TtsEngine>]>,
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
    /// Called by the engine when it delivers to our stream (kept for streams opened later).
    wake: Option<Wake>,
}

/// A full engine queue only delays text (the stream keeps it and retries on every poll).
fn queued(r: Result<(), TtsError>) -> Result<(), String> {
    match r {
        Ok(()) | Err(TtsError::QueueFull) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

impl TtsAdapter {
    /// `stream` was opened with `wake` (if any); streams opened later get it too.
    pub fn new(
        engines: Arc<[Arc<TtsEngine>]>,
        stream: TtsStream,
        voice: String,
        wake: Option<Wake>,
    ) -> Self {
        TtsAdapter {
            wake,
            engines,
            stream,
            voice,
            active: None,
            spoke: false,
            clause_seen: false,
            clause_at: None,
        }
    }

    /// Text waits for room in the engine's queue: `poll` must run again soon.
    pub fn has_held_back(&self) -> bool {
        self.stream.has_held_back()
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
        // Voices no loaded engine has (e.g. OpenAI names) keep the current one.
        if voice != self.voice {
            match self
                .engines
                .iter()
                .find(|e| e.voices().iter().any(|v| v == voice))
            {
                Some(engine) => {
                    self.stream = engine
                        .open_stream_waking(voice, self.wake.clone())
                        .map_err(|e| e.to_string())?;
                    self.voice = voice.to_string();
                }
                None => {
                    tracing::debug!(voice, current = %self.voice, "unknown voice, keeping the current one")
                }
            }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use antiphon_models::store::ModelStore;
    use antiphon_models::tts::lexicon::Lexicon;
    use antiphon_models::tts::load::spawn_engine_for_voice;

    use super::*;

    /// Runs one reply through the adapter; returns the rates of its audio chunks.
    fn reply_rates(adapter: &mut TtsAdapter, epoch: Epoch, voice: &str) -> Vec<u32> {
        adapter.text(epoch, "Hello there.", voice).unwrap();
        adapter.finish(epoch).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut rates = Vec::new();
        let mut out = Vec::new();
        while Instant::now() < deadline {
            adapter.poll(&mut out);
            for (_, e) in out.drain(..) {
                match e {
                    EngineEvent::TtsAudio { rate, samples, .. } if !samples.is_empty() => {
                        rates.push(rate)
                    }
                    EngineEvent::TtsDone { .. } => return rates,
                    EngineEvent::Failed { message, .. } => panic!("TTS failed: {message}"),
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("no end of reply within 60 s");
    }

    #[test]
    fn session_voice_picks_the_engine_that_has_it() {
        let store = ModelStore::from_env().unwrap();
        let lexicon = Arc::new(Lexicon::load(&store).unwrap());
        let piper = spawn_engine_for_voice(&store, lexicon.clone(), "joe", 1).unwrap();
        let kokoro = spawn_engine_for_voice(&store, lexicon, "af_heart", 1).unwrap();
        let (piper_rate, kokoro_rate) = (22_050, 24_000);
        let engines: Arc<[Arc<TtsEngine>]> = Arc::from(vec![Arc::new(piper), Arc::new(kokoro)]);
        let stream = engines[0].open_stream("joe").unwrap();
        let mut adapter = TtsAdapter::new(engines, stream, "joe".into(), None);

        let rates = reply_rates(&mut adapter, 1, "joe");
        assert!(
            !rates.is_empty() && rates.iter().all(|r| *r == piper_rate),
            "{rates:?}"
        );
        // A Kokoro voice moves the session onto the Kokoro engine.
        let rates = reply_rates(&mut adapter, 2, "af_heart");
        assert!(
            !rates.is_empty() && rates.iter().all(|r| *r == kokoro_rate),
            "{rates:?}"
        );
        // A name no engine has keeps the current voice.
        let rates = reply_rates(&mut adapter, 3, "alloy");
        assert!(rates.iter().all(|r| *r == kokoro_rate), "{rates:?}");
        // And back.
        let rates = reply_rates(&mut adapter, 4, "joe");
        assert!(
            !rates.is_empty() && rates.iter().all(|r| *r == piper_rate),
            "{rates:?}"
        );
    }
}
