//! ASR side of a session's bridge: pushes input audio into the session's ASR slot, maps the
//! recogniser's audio-clock times back to the arrival instants of the audio, and turns
//! [`AsrEvent`]s into [`EngineEvent`]s. With a [`SpeakerTagger`] it also labels each final with
//! its speaker: a `SpeakerLabel` event goes right before the `TranscriptFinal`.
//!
//! Label timing: the tagger embeds windows while the user speaks (and during the endpointing
//! silence), so the label is normally decided when the VAD reports the end of speech, before
//! the final. If it is not, the final (and every ASR event after it, to keep their order) waits
//! at most [`LABEL_WAIT`]; then it goes without a label. The wait is logged (`held_ms`).

use antiphon_models::engine::wake::Wake;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use antiphon_models::asr::{AsrEngine, AsrEvent, AsrSession, StreamingAsr};
use antiphon_models::vad::endpoint::EndpointConfig;
use antiphon_models::vad::turn_end::TurnEnd;

use super::diar::{Lookup, SpeakerTagger};
use crate::session::audio_format::ASR_RATE;
use crate::session::engine::{Engine, EngineEvent};

/// Pushes remembered for mapping audio time to arrival: 60 s of 20 ms frames. Speech ends
/// reported by the endpointer are at most a silence duration (plus any backlog) old.
const ARRIVALS_KEPT: usize = 3000;
/// Final transcripts kept for a manual commit (turns since the last commit).
const FINALS_KEPT: usize = 64;
/// Longest a final waits for its speaker label (it holds up the LLM start, i.e. TTFB).
pub const LABEL_WAIT: Duration = Duration::from_millis(20);

/// When each stretch of the session's input audio arrived, on the recogniser's sample clock
/// (sample 0 = the first sample pushed).
#[derive(Debug, Default)]
pub struct ArrivalClock {
    /// (sample count after the push, arrival of that push), oldest first.
    pushes: VecDeque<(u64, Instant)>,
    total: u64,
}

impl ArrivalClock {
    pub fn record(&mut self, samples: usize, arrival: Instant) {
        self.total += samples as u64;
        self.pushes.push_back((self.total, arrival));
        if self.pushes.len() > ARRIVALS_KEPT {
            self.pushes.pop_front();
        }
    }

    /// Arrival of the push that carried `sample`; the newest known push for a sample not
    /// pushed yet, the oldest kept for one older than the history.
    pub fn arrival_of(&self, sample: u64) -> Option<Instant> {
        let i = self.pushes.partition_point(|&(end, _)| end <= sample);
        self.pushes
            .get(i)
            .or_else(|| self.pushes.back())
            .map(|&(_, at)| at)
    }

    /// Arrival of the sample that starts at `ms` on the audio clock.
    pub fn arrival_of_ms(&self, ms: u64) -> Option<Instant> {
        self.arrival_of(ms * u64::from(ASR_RATE) / 1000)
    }
}

pub struct AsrAdapter {
    engine: Arc<AsrEngine>,
    endpoint: EndpointConfig,
    session: Option<AsrSession>,
    clock: ArrivalClock,
    /// A manual commit is waiting for `EndOfStream`.
    committing: bool,
    /// Finals since the last commit: a manual turn may span several VAD segments.
    since_commit: VecDeque<String>,
    diar: Option<SpeakerTagger>,
    /// Events not yet handed out, in order: a final whose label is pending holds the rest.
    outbox: VecDeque<Outgoing>,
    /// Called by the engine when it delivers to our slot (kept for the slots `reset` takes).
    wake: Option<Wake>,
    /// Dropped audio already reported to the session (samples of the current slot), and when.
    dropped_reported: u64,
    dropped_reported_at: Option<Instant>,
    /// Semantic judgements weigh the LLM's sentence-end probability of each pause's words.
    text_judged: bool,
    /// Pauses whose words await that probability: (speech end ms, transcript).
    pauses_to_judge: Vec<(u64, String)>,
}

/// At most one report of dropped audio per this much time: an engine that stays behind
/// would otherwise send the caller an error per frame.
const DROP_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

enum Outgoing {
    Event(Instant, EngineEvent),
    /// A VAD final waiting for its speaker label (since `since`).
    Final {
        text: String,
        start_ms: u64,
        end_ms: u64,
        since: Instant,
    },
}

impl AsrAdapter {
    /// `session` was opened with `wake` (if any); slots taken later get it too.
    pub fn new(
        engine: Arc<AsrEngine>,
        endpoint: EndpointConfig,
        session: AsrSession,
        wake: Option<Wake>,
    ) -> Self {
        AsrAdapter {
            wake,
            engine,
            endpoint,
            session: Some(session),
            clock: ArrivalClock::default(),
            committing: false,
            since_commit: VecDeque::new(),
            diar: None,
            outbox: VecDeque::new(),
            dropped_reported: 0,
            dropped_reported_at: None,
            text_judged: false,
            pauses_to_judge: Vec::new(),
        }
    }

    /// Semantic pause judgements wait for a text verdict on each pause's words
    /// ([`Self::take_pauses_to_judge`], answered by [`Self::text_verdict`]).
    pub fn with_text_verdicts(mut self) -> Self {
        self.text_judged = true;
        if let Some(session) = self.session.as_mut()
            && let Err(e) = session.expect_text_verdicts()
        {
            tracing::debug!("text verdicts not enabled: {e}");
        }
        self
    }

    /// Pauses (speech end ms, words) a text verdict is wanted for, in order.
    pub fn take_pauses_to_judge(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.pauses_to_judge)
    }

    /// The LLM's probability that a sentence ends with the words of the pause after
    /// `speech_end_ms` (`None`: unknown), for the recogniser's judgement of that pause.
    pub fn text_verdict(&mut self, speech_end_ms: u64, sentence_end: Option<f32>) {
        if let Some(session) = self.session.as_mut()
            && let Err(e) = session.text_verdict(speech_end_ms, sentence_end)
        {
            tracing::debug!("text verdict not delivered: {e}");
        }
    }

    /// Labels each final with its speaker (session diarization).
    pub fn with_speaker_tagger(mut self, tagger: SpeakerTagger) -> Self {
        self.diar = Some(tagger);
        self
    }

    fn session(&mut self) -> Result<&mut AsrSession, String> {
        self.session
            .as_mut()
            .ok_or_else(|| "the ASR slot was lost at a reset".to_string())
    }

    pub fn push(&mut self, samples: &[f32], arrival: Instant) -> Result<(), String> {
        self.session()?
            .push_audio(samples)
            .map_err(|e| e.to_string())?;
        self.clock.record(samples.len(), arrival);
        if let Some(d) = self.diar.as_mut() {
            d.push(samples);
        }
        self.report_dropped(arrival);
        Ok(())
    }

    /// Tells the session about caller audio the engine dropped since the last report.
    fn report_dropped(&mut self, now: Instant) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let dropped = session.dropped_samples();
        let due = self
            .dropped_reported_at
            .is_none_or(|at| now.saturating_duration_since(at) >= DROP_REPORT_EVERY);
        if dropped > self.dropped_reported && due {
            let ms = (dropped - self.dropped_reported) * 1000 / u64::from(ASR_RATE);
            self.dropped_reported = dropped;
            self.dropped_reported_at = Some(now);
            self.send(now, EngineEvent::InputAudioDropped { ms: ms.max(1) });
        }
    }

    /// Manual turn: end the open utterance; the turn's transcript follows `EndOfStream`.
    pub fn commit(&mut self) -> Result<(), String> {
        self.committing = true;
        self.session()?.finish().map_err(|e| e.to_string())
    }

    /// Drops buffered audio and VAD state by taking a fresh slot (the old one is freed first,
    /// so a full engine still has one for us).
    pub fn reset(&mut self) -> Result<(), String> {
        // What the old slot dropped and has not reported yet goes out now (clearing the
        // last report's time makes it due); the new slot counts from zero, unthrottled.
        self.dropped_reported_at = None;
        self.report_dropped(Instant::now());
        self.dropped_reported = 0;
        self.dropped_reported_at = None;
        self.session = None;
        self.clock = ArrivalClock::default();
        self.committing = false;
        self.since_commit.clear();
        if let Some(d) = self.diar.as_mut() {
            d.reset();
        }
        // A final still held for its label now finds no segment and goes out at the next poll.
        let mut session = self
            .engine
            .open_waking(self.endpoint, self.wake.clone())
            .map_err(|e| e.to_string())?;
        self.pauses_to_judge.clear();
        if self.text_judged {
            session.expect_text_verdicts().map_err(|e| e.to_string())?;
        }
        self.session = Some(session);
        Ok(())
    }

    /// New server-VAD parameters (`session.update`). The engine fixes a slot's endpointer when
    /// it opens, so this takes a fresh slot with them: audio the old slot still buffered and an
    /// utterance in progress are discarded, which at a settings change is what a client expects.
    /// An invalid config is refused before the old slot is let go.
    pub fn configure(&mut self, endpoint: EndpointConfig) -> Result<(), String> {
        endpoint.validate().map_err(|e| e.to_string())?;
        self.endpoint = endpoint;
        self.reset()
    }

    /// A final is held for its speaker label: `poll` must run again within [`LABEL_WAIT`]
    /// even if no engine delivers anything.
    pub fn holds_a_final(&self) -> bool {
        matches!(self.outbox.front(), Some(Outgoing::Final { .. }))
    }

    /// Moves every ready recogniser event to `out`; true if there was any.
    pub fn poll(&mut self, out: &mut Vec<(Instant, EngineEvent)>) -> bool {
        let mut any = false;
        if let Some(d) = self.diar.as_mut() {
            any |= d.poll(Instant::now());
        }
        while let Some(event) = self.session.as_mut().and_then(|s| s.try_event()) {
            any = true;
            let now = Instant::now();
            match event {
                AsrEvent::SpeechStarted {
                    audio_start_ms,
                    speech_start_ms,
                } => {
                    if let Some(d) = self.diar.as_mut() {
                        d.speech_started(speech_start_ms);
                    }
                    let at = self.clock.arrival_of_ms(speech_start_ms).unwrap_or(now);
                    self.send(
                        at,
                        EngineEvent::SpeechStarted {
                            audio_ms: audio_start_ms,
                        },
                    );
                }
                AsrEvent::SpeechStopped {
                    audio_end_ms,
                    speech_end_ms,
                } => {
                    if let Some(d) = self.diar.as_mut() {
                        d.speech_stopped(speech_end_ms, now);
                    }
                    // The latency origin: when the last voiced sample arrived.
                    let last_voiced =
                        (speech_end_ms * u64::from(ASR_RATE) / 1000).saturating_sub(1);
                    let at = self.clock.arrival_of(last_voiced).unwrap_or(now);
                    self.send(
                        at,
                        EngineEvent::SpeechStopped {
                            audio_ms: audio_end_ms,
                        },
                    );
                }
                AsrEvent::Partial { text, .. } => {
                    self.send(now, EngineEvent::TranscriptPartial { text })
                }
                AsrEvent::Paused {
                    text,
                    speech_end_ms,
                    ..
                } => {
                    if self.text_judged && matches!(self.endpoint.turn_end, TurnEnd::Semantic(_)) {
                        self.pauses_to_judge.push((speech_end_ms, text.clone()));
                    }
                    self.send(now, EngineEvent::SpeechPaused { text })
                }
                AsrEvent::Resumed { .. } => self.send(now, EngineEvent::SpeechResumed),
                AsrEvent::TurnJudged {
                    probability,
                    vetoed,
                    complete,
                    ..
                } => self.send(
                    now,
                    EngineEvent::TurnJudged {
                        probability,
                        vetoed,
                        complete,
                    },
                ),
                AsrEvent::Final {
                    text,
                    start_ms,
                    end_ms,
                    ..
                } => {
                    if self.since_commit.len() == FINALS_KEPT {
                        self.since_commit.pop_front();
                    }
                    self.since_commit.push_back(text.clone());
                    if !self.committing {
                        if self.diar.is_some() {
                            self.outbox.push_back(Outgoing::Final {
                                text,
                                start_ms,
                                end_ms,
                                since: now,
                            });
                        } else {
                            self.send(now, EngineEvent::TranscriptFinal { text });
                        }
                    }
                }
                AsrEvent::EndOfStream => {
                    if std::mem::take(&mut self.committing) {
                        let parts: Vec<String> = self.since_commit.drain(..).collect();
                        let text = parts
                            .iter()
                            .map(|s| s.trim())
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ");
                        // A manual turn may span several segments: the latest label stands.
                        if let Some(label) = self.diar.as_ref().and_then(|d| d.last_label()) {
                            self.send(now, EngineEvent::SpeakerLabel { label });
                        }
                        self.send(now, EngineEvent::TranscriptFinal { text });
                    }
                }
                AsrEvent::Failed { message } => self.send(
                    now,
                    EngineEvent::Failed {
                        engine: Engine::Asr,
                        epoch: None,
                        message,
                    },
                ),
            }
        }
        self.release(Instant::now(), out);
        any
    }

    fn send(&mut self, at: Instant, event: EngineEvent) {
        self.outbox.push_back(Outgoing::Event(at, event));
    }

    /// Hands out events in order until a final whose label is still pending (and not yet
    /// waited [`LABEL_WAIT`] for).
    fn release(&mut self, now: Instant, out: &mut Vec<(Instant, EngineEvent)>) {
        while let Some(front) = self.outbox.front() {
            let label = match front {
                Outgoing::Event(..) => None,
                Outgoing::Final {
                    start_ms,
                    end_ms,
                    since,
                    ..
                } => match self.diar.as_ref().map(|d| d.lookup(*start_ms, *end_ms)) {
                    Some(Lookup::Pending) if now.duration_since(*since) < LABEL_WAIT => return,
                    Some(Lookup::Ready(label)) => label,
                    _ => None,
                },
            };
            match self.outbox.pop_front() {
                Some(Outgoing::Event(at, event)) => out.push((at, event)),
                Some(Outgoing::Final { text, since, .. }) => {
                    tracing::info!(
                        target: "antiphon::diar",
                        label = label.as_deref().unwrap_or("-"),
                        held_ms = now.saturating_duration_since(since).as_secs_f64() * 1000.0,
                        "transcript final released"
                    );
                    if let Some(label) = label {
                        out.push((now, EngineEvent::SpeakerLabel { label }));
                    }
                    // Stamped when handed on: a held final reaches the session only now.
                    out.push((now, EngineEvent::TranscriptFinal { text }));
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn arrival_clock_maps_samples_to_the_push_that_carried_them() {
        let t0 = Instant::now();
        let mut c = ArrivalClock::default();
        assert_eq!(c.arrival_of(0), None);
        for i in 0..10u32 {
            c.record(320, t0 + Duration::from_millis(20 * u64::from(i)));
        }
        assert_eq!(c.arrival_of(0), Some(t0));
        assert_eq!(c.arrival_of(319), Some(t0));
        assert_eq!(c.arrival_of(320), Some(t0 + Duration::from_millis(20)));
        // 100 ms = sample 1600 = first sample of push 5.
        assert_eq!(c.arrival_of_ms(100), Some(t0 + Duration::from_millis(100)));
        // Not pushed yet: the newest push.
        assert_eq!(c.arrival_of(10_000), Some(t0 + Duration::from_millis(180)));
    }

    /// Issue 17: audio the engine drops reaches the session as one `InputAudioDropped` with
    /// its length (not silently, and not once per frame).
    #[test]
    fn dropped_caller_audio_is_reported_once_with_its_length() {
        use antiphon_models::asr::AsrEngineConfig;
        let store = antiphon_models::store::ModelStore::from_env().expect("model store");
        let config = AsrEngineConfig {
            slots: 1,
            threads: 1,
            inbox_ms: 200,
            ..AsrEngineConfig::default()
        };
        let engine = Arc::new(AsrEngine::start(&store, config).expect("ASR engine"));
        let endpoint = EndpointConfig::default();
        let session = engine.open_with(endpoint).expect("slot");
        let mut adapter = AsrAdapter::new(engine, endpoint, session, None);
        // Ten seconds in one push, as a stalled transport would deliver them: only the
        // newest 200 ms fit.
        let t0 = Instant::now();
        adapter.push(&vec![0.0; 160_000], t0).expect("push");
        adapter.push(&[0.0; 320], t0).expect("push");
        let mut out = Vec::new();
        adapter.poll(&mut out);
        let dropped: Vec<u64> = out
            .iter()
            .filter_map(|(_, e)| match e {
                EngineEvent::InputAudioDropped { ms } => Some(*ms),
                _ => None,
            })
            .collect();
        assert_eq!(dropped.len(), 1, "{out:?}");
        assert!((9_700..=9_800).contains(&dropped[0]), "{dropped:?}");
    }

    #[test]
    fn arrival_clock_is_bounded() {
        let t0 = Instant::now();
        let mut c = ArrivalClock::default();
        for i in 0..(ARRIVALS_KEPT as u64 + 10) {
            c.record(1, t0 + Duration::from_micros(i));
        }
        assert_eq!(c.pushes.len(), ARRIVALS_KEPT);
        // Older than the history: the oldest kept.
        assert_eq!(c.arrival_of(0), Some(t0 + Duration::from_micros(10)));
    }
}
