//! The turn-taking test set (issue 16): every clip with a pause inserted at each gap between
//! words in the middle of its speech, kept only where the recogniser confirms the pause falls
//! mid-sentence: the words it hears before the gap are the opening words of the clip's
//! reference transcript, and some of the sentence is still to come. A reply before the end of
//! such an utterance is a cut-in.

use antiphon_audio::resample::resample_clip;
use antiphon_models::asr::wer::{normalize, word_errors};
use antiphon_models::asr::{AsrError, DecodeRow, Moonshine};

use crate::clips::{Clip, WIRE_RATE, gaps_between_words, with_pause_at};

/// Moonshine's input rate.
const ASR_RATE: u32 = 16_000;

/// One candidate pause and what the recogniser made of the words before it.
#[derive(Debug, Clone, PartialEq)]
pub struct PauseCheck {
    pub clip: String,
    /// Where the pause goes (sample at the wire rate).
    pub at_sample: usize,
    /// The recogniser's words before the pause.
    pub heard: String,
    /// Words of the reference before the pause (when it matched), and in all.
    pub words_before: Option<usize>,
    pub reference_words: usize,
}

impl PauseCheck {
    /// The pause falls between words of the sentence, with some of it still to come.
    pub fn mid_sentence(&self) -> bool {
        self.words_before
            .is_some_and(|k| k >= 1 && k < self.reference_words)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PausedSetError {
    #[error("recogniser: {0}")]
    Asr(#[from] AsrError),
    #[error("resampling for the recogniser: {0}")]
    Resample(String),
}

/// Checks every gap between words of every clip that has a reference. Returns the checks in
/// clip order (the rejected ones too, so a report can show them).
pub fn check_pauses(
    clips: &[Clip],
    asr: &mut Moonshine,
) -> Result<Vec<PauseCheck>, PausedSetError> {
    let mut checks = Vec::new();
    for clip in clips {
        let Some(reference) = &clip.reference else {
            continue;
        };
        let reference = normalize(reference);
        for (at, _) in gaps_between_words(clip) {
            let before = resample_clip(&clip.samples[..at], WIRE_RATE, ASR_RATE)
                .map_err(|e| PausedSetError::Resample(e.to_string()))?;
            let (tokens, _) = asr.transcribe(&[DecodeRow {
                audio: &before,
                forced: &[],
            }])?;
            let heard = asr.detokenize(tokens.first().map_or(&[][..], |t| t.as_slice()))?;
            checks.push(PauseCheck {
                clip: clip.name.clone(),
                at_sample: at,
                words_before: aligned_prefix(&reference, &normalize(&heard)),
                heard,
                reference_words: reference.len(),
            });
        }
    }
    Ok(checks)
}

/// How many of `reference`'s first words `heard` is, when it is one of its openings up to a
/// recognition error per ten words (at least one) and ends on the same whole word: a gap
/// inside a word ("Dash|wood") leaves a fragment the recogniser mishears, and is no place a
/// speaker pauses. The opening with the fewest errors wins, the shorter on a tie.
fn aligned_prefix(reference: &[String], heard: &[String]) -> Option<usize> {
    let last = heard.last()?;
    let (errors, k) = (1..=reference.len())
        .map(|k| (word_errors(&reference[..k], heard), k))
        .min()?;
    (errors <= 1 + k / 10 && reference[k - 1] == *last).then_some(k)
}

/// The paused utterances: each clip with a pause at every gap its check confirmed
/// mid-sentence, one utterance per gap (the first, where two gaps follow the same word). Pause lengths cycle through `pauses_ms` (400–900 ms is
/// the range a caller thinking mid-sentence takes). Names read `<clip>+pause<ms>@<words>w`.
pub fn paused_utterances(clips: &[Clip], checks: &[PauseCheck], pauses_ms: &[u64]) -> Vec<Clip> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for check in checks.iter().filter(|c| c.mid_sentence()) {
        if !seen.insert((&check.clip, check.words_before)) {
            continue;
        }
        let Some(clip) = clips.iter().find(|c| c.name == check.clip) else {
            continue;
        };
        let Some(&pause_ms) = pauses_ms.get(out.len() % pauses_ms.len().max(1)) else {
            continue;
        };
        let words = check.words_before.unwrap_or(0);
        out.push(with_pause_at(
            clip,
            check.at_sample,
            pause_ms,
            &format!("pause{pause_ms}@{words}w"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(words_before: Option<usize>, reference_words: usize) -> PauseCheck {
        PauseCheck {
            clip: "c".into(),
            at_sample: 0,
            heard: String::new(),
            words_before,
            reference_words,
        }
    }

    #[test]
    fn only_a_pause_with_words_on_both_sides_is_mid_sentence() {
        assert!(check(Some(3), 8).mid_sentence());
        assert!(!check(Some(8), 8).mid_sentence(), "the sentence is over");
        assert!(!check(Some(0), 8).mid_sentence(), "nothing said yet");
        assert!(!check(None, 8).mid_sentence(), "the words did not match");
    }

    #[test]
    fn the_words_heard_are_matched_to_an_opening_of_the_reference() {
        let reference = normalize("had he married a more a amiable woman he might have been made");
        let heard = |t: &str| aligned_prefix(&reference, &normalize(t));
        assert_eq!(heard("Had he married"), Some(3));
        // A gap inside a word: the fragment is not the reference's word.
        assert_eq!(heard("Had he mar"), None);
        // One recognition error (the reader's repeated "a" is not heard) is allowed.
        assert_eq!(heard("Had he married a more amiable woman,"), Some(8));
        assert_eq!(
            heard("Had he married a more amiable woman, he might"),
            Some(10)
        );
        assert_eq!(heard("Something else entirely was said here"), None);
        assert_eq!(heard(""), None);
    }

    #[test]
    fn pause_lengths_cycle_over_the_confirmed_gaps() {
        let clip = Clip {
            name: "c".into(),
            samples: vec![0.1; 48_000],
            speech_end_sample: 48_000,
            speech_end_ms: 2000,
            duration_ms: 2000,
            reference: Some("a b c d".into()),
        };
        let mut checks = vec![
            check(Some(1), 4),
            check(None, 4),
            check(Some(2), 4),
            check(Some(3), 4),
        ];
        for (i, c) in checks.iter_mut().enumerate() {
            c.at_sample = 10_000 * (i + 1);
        }
        let set = paused_utterances(&[clip], &checks, &[400, 900]);
        let names: Vec<&str> = set.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["c+pause400@1w", "c+pause900@2w", "c+pause400@3w"]);
        assert_eq!(set[1].speech_end_ms, 2900);
        assert_eq!(
            set[1].samples[30_000..30_000 + 24 * 900],
            vec![0.0; 24 * 900][..]
        );
    }
}
