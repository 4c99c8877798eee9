//! Kokoro's frame budget for the first chunk of a reply. The model predicts a duration for
//! every token in 25 ms frames and its decoder's cost is proportional to their sum, so frames
//! that only become silence that `shape` trims are pure latency. Measured (docs/TTS.md): the
//! leading pad gets 14-20 frames, a final comma or full stop 7-9 and the phoneme before it
//! 11-15 (phrase-final lengthening, mostly decay), a trailing pad after a mid-sentence cut ~9.
//! Capping those keeps the other phonemes' frames and turns "Sure," from 54 frames into 37.
//! Later chunks are made while earlier audio plays and keep the model's own durations.

/// Samples per duration frame at 24 kHz.
pub const FRAME_SAMPLES: usize = 600;

/// Upper bounds, in frames, for the durations outside the body of the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// The leading pad. The decoder's output ramps in over its first ~11 frames whatever they
    /// hold: at 12 the first phoneme was 2-5 dB weaker and the ASR lost onsets of a male voice
    /// ("We" heard as "He"); at 14, 1-2.5 dB and no lost onsets.
    pub leading_pad: i64,
    /// A final punctuation mark (`,` `.` `?` `!` …); `shape` adds our own pause after the chunk.
    pub final_punctuation: i64,
    /// The last phoneme before a final punctuation mark; the model voices ~4 of its frames.
    pub final_phoneme: i64,
    /// The trailing pad.
    pub final_pad: i64,
}

impl FrameLimits {
    /// Leave the model's durations as predicted.
    pub const UNCHANGED: Self = Self {
        leading_pad: i64::MAX,
        final_punctuation: i64::MAX,
        final_phoneme: i64::MAX,
        final_pad: i64::MAX,
    };
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            leading_pad: 14,
            final_punctuation: 3,
            final_phoneme: 10,
            final_pad: 5,
        }
    }
}

/// Caps the non-speech durations of one call's `durations` (one per token, pads included at
/// both ends). `ends_in_punctuation`: the token before the trailing pad is punctuation.
pub fn tighten(durations: &mut [i64], ends_in_punctuation: bool, limits: FrameLimits) {
    let n = durations.len();
    if n < 3 {
        return;
    }
    let cap = |d: &mut i64, max: i64| *d = (*d).min(max.max(1));
    cap(&mut durations[0], limits.leading_pad);
    if ends_in_punctuation {
        cap(&mut durations[n - 2], limits.final_punctuation);
        if n >= 4 {
            cap(&mut durations[n - 3], limits.final_phoneme);
        }
    }
    cap(&mut durations[n - 1], limits.final_pad);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_only_pads_and_the_final_punctuation_and_phoneme() {
        // "Sure," as predicted for af_heart: pad ʃ ˈ ʊ ɹ , pad.
        let mut d = vec![20, 2, 3, 4, 15, 9, 1];
        tighten(&mut d, true, FrameLimits::default());
        assert_eq!(d, [14, 2, 3, 4, 10, 3, 1]);
        assert_eq!(d.iter().sum::<i64>(), 37);

        // Cut mid-sentence, no final punctuation: the last phoneme keeps its frames.
        let mut d = vec![14, 1, 1, 11, 9];
        tighten(&mut d, false, FrameLimits::default());
        assert_eq!(d, [14, 1, 1, 11, 5]);
    }

    #[test]
    fn never_below_one_frame_and_unchanged_means_unchanged() {
        let mut d = vec![5, 2, 4, 2];
        tighten(
            &mut d,
            true,
            FrameLimits {
                leading_pad: 0,
                final_punctuation: -3,
                final_phoneme: 2,
                final_pad: 1,
            },
        );
        assert_eq!(d, [1, 2, 1, 1]);
        let mut d = vec![20, 2, 9, 1];
        tighten(&mut d, true, FrameLimits::UNCHANGED);
        assert_eq!(d, [20, 2, 9, 1]);
        let mut short = vec![7, 7];
        tighten(&mut short, true, FrameLimits::default());
        assert_eq!(short, [7, 7]);
    }
}
