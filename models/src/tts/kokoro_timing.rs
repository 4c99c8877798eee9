//! Kokoro's frame budget. The model predicts a duration for every token in 25 ms frames and its
//! decoder's cost is proportional to their sum, so frames that only become silence we trim
//! (`shape`) are pure latency. Measured on af_heart (docs/TTS.md): the leading pad gets 14-20
//! frames and a final comma or full stop 7-9, yet the decoder's audible output starts about 11
//! frames in however long the lead is, and what follows the last phoneme is silence. Capping
//! those three durations keeps every phoneme's own frames while the first chunk "Sure," drops
//! from 54 to 37 frames.

/// Samples per duration frame at 24 kHz.
pub const FRAME_SAMPLES: usize = 600;

/// Upper bounds, in frames, for the durations outside the spoken phonemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// The leading pad. Below ~12 the first phoneme's onset is weakened (the decoder's output
    /// ramps in over its first ~11 frames whatever they hold).
    pub leading_pad: i64,
    /// A final punctuation mark (`,` `.` `?` `!` …); `shape` adds our own pause after the chunk.
    pub final_punctuation: i64,
    /// The trailing pad.
    pub final_pad: i64,
}

impl FrameLimits {
    /// Leave the model's durations as predicted.
    pub const UNCHANGED: Self = Self {
        leading_pad: i64::MAX,
        final_punctuation: i64::MAX,
        final_pad: i64::MAX,
    };
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            leading_pad: 12,
            final_punctuation: 3,
            final_pad: i64::MAX,
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
    }
    cap(&mut durations[n - 1], limits.final_pad);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_only_pads_and_final_punctuation() {
        // "Sure," as predicted for af_heart: pad ʃ ˈ ʊ ɹ , pad.
        let mut d = vec![20, 2, 3, 4, 15, 9, 1];
        tighten(&mut d, true, FrameLimits::default());
        assert_eq!(d, [12, 2, 3, 4, 15, 3, 1]);
        assert_eq!(d.iter().sum::<i64>(), 40);

        // Without final punctuation the last phoneme keeps its frames.
        let mut d = vec![14, 1, 1, 11, 9];
        tighten(&mut d, false, FrameLimits::default());
        assert_eq!(d, [12, 1, 1, 11, 9]);
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
