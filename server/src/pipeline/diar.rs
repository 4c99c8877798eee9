//! Diarization side of a session's bridge: feeds the session's input audio and its VAD's speech
//! start/stop to a [`LiveDiarizer`] (this session's clustering state), sends the windows it
//! cuts to the shared CAM++ engine ([`DiarEngine`], one thread for all sessions) and answers
//! "who spoke `start..end`?" for each ASR final.
//!
//! Times: the ASR reports milliseconds on the session's 16 kHz sample clock (samples pushed
//! since the slot opened); the diarizer counts the same samples, so the two line up as long as
//! both are fed the same audio and reset together.

use std::collections::VecDeque;
use std::time::Instant;

use antiphon_models::diar::engine::{DiarEngineError, DiarSlot};
use antiphon_models::diar::live::{LiveConfig, LiveDiarizer, SegmentLabel};

/// Samples per millisecond at 16 kHz.
const PER_MS: u64 = 16;
/// Decisions kept for finals that come after them.
const DECIDED_KEPT: usize = 16;

/// What is known about the speaker of a stretch of audio.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Decided: the label, or `None` if the segment had no usable audio.
    Ready(Option<String>),
    /// Its segment has ended and waits for an embedding.
    Pending,
    /// No closed segment covers it (e.g. a final the ASR cut mid-speech).
    Unknown,
}

pub struct SpeakerTagger {
    slot: DiarSlot,
    live: LiveDiarizer,
    decided: VecDeque<SegmentLabel>,
    /// (segment, when its speech stop was reported), for the label latency log.
    stops: VecDeque<(u64, Instant)>,
    /// Windows the engine refused (queue full): labelled from the other windows.
    refused: u64,
}

impl SpeakerTagger {
    pub fn new(slot: DiarSlot) -> Self {
        SpeakerTagger {
            slot,
            live: LiveDiarizer::new(LiveConfig::default()),
            decided: VecDeque::new(),
            stops: VecDeque::new(),
            refused: 0,
        }
    }

    pub fn push(&mut self, samples: &[f32]) {
        self.live.push_audio(samples);
        self.submit();
    }

    pub fn speech_started(&mut self, speech_start_ms: u64) {
        self.live.speech_started(speech_start_ms * PER_MS);
        self.submit();
    }

    pub fn speech_stopped(&mut self, speech_end_ms: u64, now: Instant) {
        if let Some(segment) = self.live.open_segment() {
            if self.stops.len() == DECIDED_KEPT {
                self.stops.pop_front();
            }
            self.stops.push_back((segment, now));
        }
        self.live.speech_stopped(speech_end_ms * PER_MS);
        self.submit();
        self.collect(now);
    }

    /// Takes finished embeddings; true if there were any.
    pub fn poll(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(r) = self.slot.try_result() {
            any = true;
            match &r.embedding {
                Ok(e) => self.live.handle_embedding(r.id, Ok(e)),
                Err(message) => {
                    tracing::debug!(id = r.id, %message, "speaker window not embedded");
                    self.live.handle_embedding(r.id, Err(()));
                }
            }
        }
        self.collect(now);
        any
    }

    /// The speaker of `start_ms..end_ms` (the ASR final's audio).
    pub fn lookup(&self, start_ms: u64, end_ms: u64) -> Lookup {
        let (start, end) = (
            start_ms * PER_MS,
            (end_ms * PER_MS).max(start_ms * PER_MS + 1),
        );
        let best = self
            .decided
            .iter()
            .map(|d| {
                let o = end
                    .min(d.end_sample.max(d.start_sample + 1))
                    .saturating_sub(start.max(d.start_sample));
                (o, d)
            })
            .filter(|(o, _)| *o > 0)
            .max_by_key(|(o, _)| *o);
        match best {
            Some((_, d)) => Lookup::Ready(d.label.clone()),
            None if self.live.is_pending(start, end) => Lookup::Pending,
            None => Lookup::Unknown,
        }
    }

    /// The most recent decided label (a manual commit may span several segments).
    pub fn last_label(&self) -> Option<String> {
        self.decided.iter().rev().find_map(|d| d.label.clone())
    }

    /// The input clock restarts at 0 with the ASR's fresh slot; speakers are kept.
    pub fn reset(&mut self) {
        self.live.reset_audio();
        self.decided.clear();
        self.stops.clear();
    }

    fn submit(&mut self) {
        while let Some(job) = self.live.poll_job() {
            match self.slot.submit(job.id, job.samples) {
                Ok(()) => {}
                Err(e) => {
                    if matches!(e, DiarEngineError::Busy) {
                        self.refused += 1;
                    }
                    tracing::debug!(%e, refused = self.refused, "speaker window not queued");
                    self.live.handle_embedding(job.id, Err(()));
                }
            }
        }
    }

    fn collect(&mut self, now: Instant) {
        // Windows of decided segments still queued at the engine would only be ignored.
        self.slot.skip_below(self.live.oldest_needed_window());
        while let Some(d) = self.live.poll_label() {
            let stopped = self
                .stops
                .iter()
                .find(|(s, _)| *s == d.segment)
                .map(|(_, at)| now.saturating_duration_since(*at).as_secs_f64() * 1000.0);
            tracing::info!(
                target: "antiphon::diar",
                segment = d.segment,
                label = d.label.as_deref().unwrap_or("-"),
                similarity = d.similarity.unwrap_or(f32::NAN),
                windows = d.windows,
                speech_ms = (d.end_sample - d.start_sample) / PER_MS,
                ready_after_stop_ms = stopped.unwrap_or(f64::NAN),
                speakers = self.live.num_speakers(),
                "speaker label"
            );
            if self.decided.len() == DECIDED_KEPT {
                self.decided.pop_front();
            }
            self.decided.push_back(d);
        }
    }
}
