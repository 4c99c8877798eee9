//! Round trip: 20 varied sentences spoken by each engine and transcribed back by the ASR
//! (Moonshine base-en, the model behind the ASR engine) on the whole utterance; word error rate
//! after normalising both sides must be at most 10 %. Kokoro runs a handful of them here (its
//! compute is ~0.65–1 s per second of audio on 2 cores); all 20 are `--ignored`.

use std::sync::Arc;
use std::time::Duration;

use antiphon_audio::resample::resample_clip;
use antiphon_models::asr::moonshine::SAMPLE_RATE as ASR_RATE;
use antiphon_models::asr::wer::word_errors;
use antiphon_models::asr::{DecodeRow, Moonshine};
use antiphon_models::store::ModelStore;
use antiphon_models::tts::lexicon::Lexicon;
use antiphon_models::tts::load::spawn_engine_for_voice;
use antiphon_models::tts::normalize::normalize;

const SENTENCES: [&str; 20] = [
    "The meeting starts at 3:30 pm tomorrow.",
    "Can you call me back after lunch?",
    "My phone number is 555-123-4567.",
    "The ticket costs $12.50 at the door.",
    "Doctor Smith will see you now.",
    "We sold 1,250 copies in the first week.",
    "Is the library open on Sunday?",
    "Sarah and Michael moved to Chicago last year.",
    "The temperature dropped to 5 degrees overnight.",
    "Please send the report by Friday morning.",
    "Sales grew by 12% in the second quarter.",
    "What time does the train leave for Boston?",
    "She finished 3rd out of 40 runners.",
    "The package should arrive within 2 days.",
    "I would like a cup of coffee with milk.",
    "Our office is on the 21st floor.",
    "Did you remember to lock the front door?",
    "The concert was on March 5, 2024.",
    "Thank you for waiting, your order is ready.",
    "Turn left at the next light and park behind the bank.",
];

/// Words as a listener would write them: normalised, lower case, no punctuation, and runs of
/// single letters joined ("p m" and "pm" compare equal).
fn words(text: &str) -> Vec<String> {
    let spoken = normalize(text)
        .to_lowercase()
        .replace('-', " ")
        .replace("per cent", "percent");
    let raw: Vec<String> = spoken
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::new();
    for w in raw {
        let single = w.chars().count() == 1 && w != "a" && w != "i";
        match out.last_mut() {
            Some(prev)
                if single
                    && prev.chars().all(|c| c.is_alphabetic())
                    && prev.len() <= 3
                    && prev != "a" =>
            {
                prev.push_str(&w)
            }
            _ => out.push(w),
        }
    }
    out
}

#[test]
fn wer_harness_scores_what_it_should() {
    assert_eq!(
        words("It's $12.50 at 3:30 PM."),
        [
            "its", "twelve", "dollars", "and", "fifty", "cents", "at", "three", "thirty", "pm"
        ]
    );
    assert_eq!(words("twelve dollars and fifty cents"), words("$12.50"));
    let r = words("the cat sat on the mat");
    assert_eq!(word_errors(&r, &words("the cat sat on the mat")), 0);
    assert_eq!(word_errors(&r, &words("the cat sat on mat")), 1);
    assert_eq!(word_errors(&r, &words("a cat sat in the hat today")), 4);
}

/// What the ASR hears in `audio` (at `rate`): resampled to 16 kHz and decoded in one pass.
fn transcribe(asr: &mut Moonshine, audio: &[f32], rate: u32) -> String {
    let audio = resample_clip(audio, rate, ASR_RATE).expect("resample to 16 kHz");
    let (tokens, _) = asr
        .transcribe(&[DecodeRow {
            audio: &audio,
            forced: &[],
        }])
        .expect("moonshine decodes");
    asr.detokenize(&tokens[0]).expect("detokenize")
}

/// Kokoro's share in the default run: every normalisation class that changes the words (time,
/// money, percent, ordinal-free date), a question, and onsets that a clipped start would lose.
const KOKORO_QUICK: [&str; 5] = [
    "The meeting starts at 3:30 pm tomorrow.",
    "The ticket costs $12.50 at the door.",
    "Sales grew by 12% in the second quarter.",
    "Did you remember to lock the front door?",
    "Turn left at the next light and park behind the bank.",
];

fn round_trip(voice: &str, sentences: &[&str]) {
    let store = ModelStore::from_env().expect("store");
    let lexicon = Arc::new(Lexicon::load(&store).expect("lexicon"));
    let engine = spawn_engine_for_voice(&store, lexicon, voice, 2).expect("engine");
    let mut asr = Moonshine::load(&store, 2).expect("moonshine loads");
    let (mut errors, mut total) = (0usize, 0usize);
    let mut report = String::new();
    for &sentence in sentences {
        let mut stream = engine.open_stream(voice).expect("voice");
        stream.push_text(sentence).expect("queued");
        stream.finish().expect("queued");
        let chunks = stream
            .collect_reply(Duration::from_secs(60))
            .expect("audio");
        // A listener hears the reply after some silence, as the ASR would on a call.
        let quiet = vec![0.0; engine.sample_rate() as usize / 4];
        let audio: Vec<f32> = quiet
            .iter()
            .copied()
            .chain(chunks.iter().flat_map(|c| c.samples.iter().copied()))
            .chain(quiet.iter().copied())
            .collect();
        let heard = transcribe(&mut asr, &audio, engine.sample_rate());
        let (r, h) = (words(sentence), words(&heard));
        let e = word_errors(&r, &h);
        errors += e;
        total += r.len();
        report.push_str(&format!("{e} | {sentence} | {heard}\n"));
    }
    let wer = errors as f64 / total as f64;
    eprintln!(
        "{voice}: WER {:.1} % ({errors}/{total})\n{report}",
        wer * 100.0
    );
    assert!(wer <= 0.10, "{voice}: WER {:.1} %\n{report}", wer * 100.0);
}

#[test]
fn piper_round_trip_through_asr() {
    round_trip("joe", &SENTENCES);
}

#[test]
fn kokoro_round_trip_through_asr_quick() {
    round_trip("af_heart", &KOKORO_QUICK);
}

#[test]
#[ignore = "slow on 2 cores (Kokoro ~0.65-1 s of compute per second of audio, plus ASR: ~1-2 min); \
            the 5-sentence kokoro_round_trip_through_asr_quick runs by default"]
fn kokoro_round_trip_through_asr() {
    round_trip("af_heart", &SENTENCES);
}
