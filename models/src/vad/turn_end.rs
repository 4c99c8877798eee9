//! How a pause is judged: a fixed silence timer (OpenAI's `server_vad`), or a semantic judgement
//! (`semantic_vad`): after a short silence, an acoustic end-of-turn model (Smart Turn) and the
//! pause's transcript decide whether the speaker is done. Done: the turn ends at once. Not
//! done: the endpointer waits for a longer silence, so a caller who stops to think mid-sentence
//! is not cut off.
//!
//! Sans-IO: the probability and the transcript come from the engine; this only decides.

use std::fmt;
use std::str::FromStr;

/// How eager the semantic detector is to end a turn (OpenAI `semantic_vad` names). `Auto`
/// is `Medium`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eagerness {
    Low,
    Medium,
    High,
    #[default]
    Auto,
}

impl Eagerness {
    pub fn as_str(self) -> &'static str {
        match self {
            Eagerness::Low => "low",
            Eagerness::Medium => "medium",
            Eagerness::High => "high",
            Eagerness::Auto => "auto",
        }
    }

    /// P(turn complete) at or above which the speaker is judged done.
    pub fn threshold(self) -> f32 {
        match self {
            Eagerness::Low => 0.7,
            Eagerness::Medium | Eagerness::Auto => 0.5,
            Eagerness::High => 0.3,
        }
    }

    /// Silence that ends the turn whatever the judgement said (the detector can be wrong
    /// both ways; this bounds the cost of a wrong "not done").
    pub fn max_silence_ms(self) -> u32 {
        match self {
            Eagerness::Low => 2000,
            Eagerness::Medium | Eagerness::Auto => 1200,
            Eagerness::High => 800,
        }
    }
}

impl fmt::Display for Eagerness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Eagerness {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Eagerness::Low),
            "medium" => Ok(Eagerness::Medium),
            "high" => Ok(Eagerness::High),
            "auto" => Ok(Eagerness::Auto),
            other => Err(format!(
                "unknown eagerness {other:?}: expected low, medium, high or auto"
            )),
        }
    }
}

/// What ends a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TurnEnd {
    /// A fixed silence (`EndpointConfig::silence_duration_ms`).
    #[default]
    Timer,
    /// Judgements after [`JUDGE_AT_MS`] of silence, with the eagerness's longer silence as the
    /// fallback.
    Semantic(Eagerness),
}

/// Silence before the speaker's audio is judged. Long enough that the gaps inside words and
/// between most words have passed.
pub const PROBE_AFTER_MS: u32 = 200;

/// The silences at which one pause is judged: first early, for an answer as soon as the turn
/// sounds finished, then once more, because a speaker whose voice did not fall at the end
/// (read speech does this) sounds finished once a longer silence follows, while a
/// mid-sentence pause mostly still sounds unfinished.
pub const JUDGE_AT_MS: [u32; 2] = [PROBE_AFTER_MS, 600];

/// Words a finished sentence almost never ends on: a transcript that stops on one is a speaker
/// in mid-sentence, whatever their voice sounds like. (Smart Turn was trained on conversational
/// speech; read speech and narrow-band phone audio can fool it.)
const DANGLING: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "because", "if", "than", "of", "to", "with", "from",
    "into", "at", "my", "your", "its", "our", "their", "um", "uh", "er", "erm",
];

/// Whether a transcript stops where a sentence cannot end: on an article, a conjunction, one of
/// the prepositions that need an object, a possessive or a filler. (Words a sentence can end
/// on — "than he was", "who is it for" — are not listed. Punctuation is not evidence either
/// way: the recogniser puts a comma wherever the voice carries on, which is what the acoustic
/// model already hears, and a full stop after any audio it is given, finished or not.)
pub fn sounds_unfinished(text: &str) -> bool {
    let text = text.trim_end();
    let last = text
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
        .to_lowercase();
    !last.is_empty() && DANGLING.contains(&last.as_str())
}

/// A pause whose words the LLM gives less than this probability of a sentence end is in
/// mid-sentence. Measured with the default model in a call's conversation
/// (`llm_engine::sentence_end_probability_separates_finished_from_unfinished_words`): 0.000–0.012
/// after 13 mid-sentence openings, 0.031–0.479 after 8 finished sentences.
pub const SENTENCE_END_FLOOR: f32 = 0.02;

/// The judgement of one pause.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Smart Turn's P(turn complete).
    pub probability: f32,
    /// The pause's transcript vetoed a "done".
    pub vetoed: bool,
    /// The turn ends now.
    pub complete: bool,
}

/// Judges a pause from the acoustic probability and, when known, the transcript up to it and
/// the LLM's probability that a sentence ends with it (`sentence_end`).
pub fn judge(
    eagerness: Eagerness,
    probability: f32,
    transcript: Option<&str>,
    sentence_end: Option<f32>,
) -> Verdict {
    let sounds_done = probability >= eagerness.threshold();
    let reads_unfinished = transcript.is_some_and(sounds_unfinished)
        || sentence_end.is_some_and(|p| p < SENTENCE_END_FLOOR);
    let vetoed = sounds_done && reads_unfinished;
    Verdict {
        probability,
        vetoed,
        complete: sounds_done && !vetoed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangling_words_and_commas_sound_unfinished() {
        for text in [
            "please enter your password and",
            "I would like to",
            "He was going to the",
            "so I was, um",
            "then I put it into",
            "It's in my",
            "a cup of",
        ] {
            assert!(sounds_unfinished(text), "{text}");
        }
        for text in [
            "he was not an ill disposed young man",
            "What time is it?",
            "Thank you.",
            "",
            "I'm done",
            "than he was.",
            "who is it for",
            // Moonshine's comma after a finished clause is not a veto.
            "rather selfish is to be ill-disposed,",
        ] {
            assert!(!sounds_unfinished(text), "{text}");
        }
    }

    #[test]
    fn eagerness_moves_the_threshold_and_the_transcript_can_veto() {
        assert!(judge(Eagerness::High, 0.35, None, None).complete);
        assert!(!judge(Eagerness::Auto, 0.35, None, None).complete);
        assert!(judge(Eagerness::Auto, 0.6, Some("thank you"), None).complete);
        assert!(!judge(Eagerness::Low, 0.6, Some("thank you"), None).complete);
        let v = judge(Eagerness::Auto, 0.95, Some("and then I went to the"), None);
        assert!(v.vetoed && !v.complete);
        // A veto only overrides a "done".
        assert!(!judge(Eagerness::Auto, 0.1, Some("to the"), None).vetoed);
        // The LLM's sentence-end probability vetoes words no list knows are unfinished.
        let v = judge(Eagerness::Auto, 0.9, Some("he was not"), Some(0.001));
        assert!(v.vetoed && !v.complete);
        assert!(judge(Eagerness::Auto, 0.9, Some("thank you"), Some(0.3)).complete);
    }

    #[test]
    fn eagerness_names_round_trip() {
        for e in [
            Eagerness::Low,
            Eagerness::Medium,
            Eagerness::High,
            Eagerness::Auto,
        ] {
            assert_eq!(e.as_str().parse::<Eagerness>(), Ok(e));
        }
        assert!("eager".parse::<Eagerness>().is_err());
    }
}
