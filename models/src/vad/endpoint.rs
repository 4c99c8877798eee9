//! Turns per-frame speech probabilities into `SpeechStarted` / `SpeechStopped` decisions.
//!
//! Sans-IO: the caller passes each frame's probability together with the frame's position on
//! the session's audio clock (in samples at 16 kHz); nothing here reads a clock. The parameters
//! are those of OpenAI's `server_vad` turn detection.

pub use super::turn_end::TurnEnd;

/// Sample rate of the audio clock the endpointer counts in.
pub const CLOCK_RATE: u32 = 16_000;

/// Converts samples at [`CLOCK_RATE`] to whole milliseconds.
pub fn samples_to_ms(samples: u64) -> u64 {
    samples * 1000 / u64::from(CLOCK_RATE)
}

/// Converts milliseconds to samples at [`CLOCK_RATE`].
pub fn ms_to_samples(ms: u64) -> u64 {
    ms * u64::from(CLOCK_RATE) / 1000
}

/// Turn-detection parameters (OpenAI `server_vad` names and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointConfig {
    /// Speech probability at or above which a frame counts as speech.
    pub threshold: f32,
    /// Audio kept before the first speech frame, in milliseconds.
    pub prefix_padding_ms: u32,
    /// Silence needed after speech before the turn ends, in milliseconds (the timer's).
    pub silence_duration_ms: u32,
    /// What ends a turn: the timer above, or a semantic judgement of each pause.
    pub turn_end: TurnEnd,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            turn_end: TurnEnd::Timer,
        }
    }
}

/// Smallest silence duration accepted: below this, ordinary pauses between words end turns.
pub const MIN_SILENCE_DURATION_MS: u32 = 100;
/// Largest silence duration accepted: a turn that never ends holds its audio without bound.
pub const MAX_SILENCE_DURATION_MS: u32 = 10_000;
/// Largest prefix padding accepted: the recogniser keeps this much audio before every turn.
pub const MAX_PREFIX_PADDING_MS: u32 = 2_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EndpointConfigError {
    #[error("threshold must be within 0.0..=1.0, got {0}")]
    Threshold(f32),
    #[error(
        "silence_duration_ms must be within {MIN_SILENCE_DURATION_MS}..={MAX_SILENCE_DURATION_MS}, got {0}"
    )]
    SilenceDuration(u32),
    #[error("prefix_padding_ms must be at most {MAX_PREFIX_PADDING_MS}, got {0}")]
    PrefixPadding(u32),
}

impl EndpointConfig {
    pub fn validate(&self) -> Result<(), EndpointConfigError> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(EndpointConfigError::Threshold(self.threshold));
        }
        if !(MIN_SILENCE_DURATION_MS..=MAX_SILENCE_DURATION_MS).contains(&self.silence_duration_ms)
        {
            return Err(EndpointConfigError::SilenceDuration(
                self.silence_duration_ms,
            ));
        }
        if self.prefix_padding_ms > MAX_PREFIX_PADDING_MS {
            return Err(EndpointConfigError::PrefixPadding(self.prefix_padding_ms));
        }
        Ok(())
    }

    /// Below this a frame counts as silence. Between the two thresholds a frame keeps the
    /// current state, so a probability wobbling around `threshold` does not flap.
    fn silence_threshold(&self) -> f32 {
        (self.threshold - 0.15).max(0.01)
    }

    /// Silence that ends a turn with no judgement: the timer, or the semantic fallback.
    pub fn max_silence_ms(&self) -> u32 {
        match self.turn_end {
            TurnEnd::Timer => self.silence_duration_ms,
            TurnEnd::Semantic(eagerness) => eagerness.max_silence_ms(),
        }
    }
}

/// A turn boundary, in samples on the session's audio clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointEvent {
    /// Speech began. `audio_start` includes the prefix padding (as OpenAI's `audio_start_ms`);
    /// `speech_start` is the start of the first frame judged to be speech.
    SpeechStarted { audio_start: u64, speech_start: u64 },
    /// Speech ended. `audio_end` is where the silence duration ran out (the decision point,
    /// as OpenAI's `audio_end_ms`); `speech_end` is the end of the last speech frame.
    SpeechStopped { audio_end: u64, speech_end: u64 },
}

/// The endpointing state machine for one session.
#[derive(Debug, Clone)]
pub struct Endpointer {
    config: EndpointConfig,
    in_speech: bool,
    /// End of the most recent frame judged to be speech.
    last_speech_end: u64,
}

impl Endpointer {
    pub fn new(config: EndpointConfig) -> Result<Self, EndpointConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            in_speech: false,
            last_speech_end: 0,
        })
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// End of the most recent frame judged to be speech.
    pub fn last_speech_end(&self) -> u64 {
        self.last_speech_end
    }

    /// Feeds one frame: `probability` for the samples `start..start + len`.
    pub fn push(&mut self, probability: f32, start: u64, len: u64) -> Option<EndpointEvent> {
        let end = start + len;
        if probability >= self.config.threshold {
            self.last_speech_end = end;
            if !self.in_speech {
                self.in_speech = true;
                let padding = ms_to_samples(u64::from(self.config.prefix_padding_ms));
                return Some(EndpointEvent::SpeechStarted {
                    audio_start: start.saturating_sub(padding),
                    speech_start: start,
                });
            }
            return None;
        }
        if !self.in_speech {
            return None;
        }
        if probability >= self.config.silence_threshold() {
            // Unsure frames neither end the turn nor extend the speech.
            return None;
        }
        let silence = ms_to_samples(u64::from(self.config.max_silence_ms()));
        if end >= self.last_speech_end + silence {
            self.in_speech = false;
            return Some(EndpointEvent::SpeechStopped {
                audio_end: end,
                speech_end: self.last_speech_end,
            });
        }
        None
    }

    /// Ends an open turn at `now` because its last pause was judged the end (semantic turn
    /// detection). Nothing happens when speech is not open.
    pub fn end_now(&mut self, now: u64) -> Option<EndpointEvent> {
        self.finish(now)
    }

    /// Ends an open turn at `now` (end of input): the caller closes the stream.
    pub fn finish(&mut self, now: u64) -> Option<EndpointEvent> {
        if !self.in_speech {
            return None;
        }
        self.in_speech = false;
        Some(EndpointEvent::SpeechStopped {
            audio_end: now.max(self.last_speech_end),
            speech_end: self.last_speech_end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u64 = 512;

    /// Runs a probability sequence through an endpointer, returning events with frame index.
    fn run(config: EndpointConfig, probs: &[f32]) -> Vec<(usize, EndpointEvent)> {
        let mut ep = Endpointer::new(config).expect("valid config");
        probs
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| ep.push(p, i as u64 * FRAME, FRAME).map(|e| (i, e)))
            .collect()
    }

    #[test]
    fn silence_only_gives_no_events() {
        assert!(run(EndpointConfig::default(), &[0.01; 100]).is_empty());
    }

    #[test]
    fn start_includes_prefix_padding_and_stop_waits_for_silence() {
        let mut probs = vec![0.05; 20];
        probs.extend([0.9; 30]);
        probs.extend([0.05; 40]);
        let events = run(EndpointConfig::default(), &probs);
        assert_eq!(events.len(), 2, "{events:?}");
        let (i, start) = events[0];
        assert_eq!(i, 20);
        assert_eq!(
            start,
            EndpointEvent::SpeechStarted {
                audio_start: 20 * FRAME - 4800,
                speech_start: 20 * FRAME
            }
        );
        let (j, stop) = events[1];
        let speech_end = 50 * FRAME;
        // 500 ms = 8000 samples = 15.6 frames: the 16th silent frame ends the turn.
        assert_eq!(j, 50 + 15);
        assert_eq!(
            stop,
            EndpointEvent::SpeechStopped {
                audio_end: 66 * FRAME,
                speech_end
            }
        );
    }

    #[test]
    fn padding_is_clamped_at_stream_start() {
        let events = run(EndpointConfig::default(), &[0.9, 0.9]);
        assert_eq!(
            events[0].1,
            EndpointEvent::SpeechStarted {
                audio_start: 0,
                speech_start: 0
            }
        );
    }

    #[test]
    fn short_pause_does_not_end_the_turn() {
        let mut probs = vec![0.9; 10];
        probs.extend([0.1; 10]); // 320 ms < 500 ms
        probs.extend([0.9; 10]);
        probs.extend([0.1; 20]);
        let events = run(EndpointConfig::default(), &probs);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            events[1].1,
            EndpointEvent::SpeechStopped { speech_end, .. } if speech_end == 30 * FRAME
        ));
    }

    #[test]
    fn shorter_silence_duration_ends_sooner() {
        let config = EndpointConfig {
            silence_duration_ms: 100,
            ..EndpointConfig::default()
        };
        let mut probs = vec![0.9; 10];
        probs.extend([0.1; 10]);
        let events = run(config, &probs);
        // 100 ms = 1600 samples = 3.1 frames: the 4th silent frame ends it.
        assert_eq!(events[1].0, 13);
    }

    #[test]
    fn unsure_frames_hold_the_state() {
        let mut probs = vec![0.9; 5];
        probs.extend([0.4; 40]); // between 0.35 and 0.5: neither speech nor silence
        let events = run(EndpointConfig::default(), &probs);
        assert_eq!(events.len(), 1, "{events:?}");
        // And they never start a turn.
        assert!(run(EndpointConfig::default(), &[0.4; 40]).is_empty());
    }

    #[test]
    fn finish_closes_an_open_turn() {
        let mut ep = Endpointer::new(EndpointConfig::default()).expect("valid config");
        ep.push(0.9, 0, FRAME);
        assert_eq!(
            ep.finish(2000),
            Some(EndpointEvent::SpeechStopped {
                audio_end: 2000,
                speech_end: FRAME
            })
        );
        assert_eq!(ep.finish(3000), None);
    }

    #[test]
    fn semantic_turns_wait_for_the_fallback_silence_unless_ended_now() {
        let config = EndpointConfig {
            turn_end: TurnEnd::Semantic(super::super::turn_end::Eagerness::High),
            ..EndpointConfig::default()
        };
        let mut probs = vec![0.9; 10];
        probs.extend([0.1; 40]);
        let events = run(config, &probs);
        // 800 ms = 12800 samples = 25 frames: the 25th silent frame ends it, not the 16th.
        assert_eq!(events[1].0, 10 + 24, "{events:?}");
        let mut ep = Endpointer::new(config).expect("valid config");
        ep.push(0.9, 0, FRAME);
        ep.push(0.1, FRAME, FRAME);
        assert_eq!(
            ep.end_now(2 * FRAME),
            Some(EndpointEvent::SpeechStopped {
                audio_end: 2 * FRAME,
                speech_end: FRAME
            })
        );
        assert!(!ep.in_speech());
        assert_eq!(ep.end_now(3 * FRAME), None);
    }

    #[test]
    fn bad_config_is_refused() {
        let bad = EndpointConfig {
            silence_duration_ms: 50,
            ..EndpointConfig::default()
        };
        assert_eq!(
            Endpointer::new(bad).unwrap_err(),
            EndpointConfigError::SilenceDuration(50)
        );
        let bad = EndpointConfig {
            threshold: 1.5,
            ..EndpointConfig::default()
        };
        assert!(Endpointer::new(bad).is_err());
    }
}
