//! TTS latency and speed: time to first audio for a 15-word sentence arriving token by token at
//! 20 tokens/s, and the real-time factor of whole-sentence synthesis, per engine. A second
//! sentence without an early comma shows the first chunk cut by the word cap instead.
//!
//! `cargo run --release -p antiphon-models --example tts_bench -- [RUNS] [THREADS] [VOICE[:WORDS[:FRAMES]]…]`
//!
//! `af_heart:6` runs the voice with its first chunk capped at 6 words instead of the engine's
//! default, to compare caps under the same load; `af_heart:4:asis` also leaves Kokoro's predicted
//! frames as they are, `af_heart:4:14,4,99,99` caps the leading pad at 14 frames, a final
//! punctuation mark at 4, the phoneme before it and the final pad at 99 (the order of
//! `kokoro_timing::FrameLimits`; fewer values leave the rest at their defaults).
//!
//! The load average is printed before and after: the benchmark box is shared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use antiphon_models::store::ModelStore;
use antiphon_models::tts::EngineConfig;
use antiphon_models::tts::chunker::{ChunkerConfig, TextChunker};
use antiphon_models::tts::kokoro_timing::FrameLimits;
use antiphon_models::tts::lexicon::Lexicon;
use antiphon_models::tts::load::{engine_config_for_voice, spawn_engine_with_config};
use antiphon_models::tts::{TtsEngine, TtsEvent};

const SENTENCE: &str =
    "Sure, I can book a table for four people at the Italian place tomorrow evening.";
/// No clause boundary early on: the first chunk is cut by the word cap.
const NO_COMMA: &str =
    "The restaurant on Main Street has a table for four at seven tonight if you want it.";
const TOKEN_INTERVAL: Duration = Duration::from_millis(50);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Feeds SENTENCE word by word on a 50 ms clock; returns (ms from first token to first
/// audio, ms from the token that completed the first chunk to first audio).
fn first_audio(
    engine: &TtsEngine,
    voice: &str,
    chunker: &ChunkerConfig,
    sentence: &str,
) -> (f64, f64) {
    let mut stream = engine.open_stream(voice).expect("voice");
    let tokens: Vec<String> = sentence
        .split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            }
        })
        .collect();
    // A twin of the stream's chunker tells us when the first chunk was cut.
    let mut chunker = TextChunker::new(chunker.clone());
    let start = Instant::now();
    let mut first_cut_at = None;
    let mut first_audio = None;
    for (k, token) in tokens.iter().enumerate() {
        let due = start + TOKEN_INTERVAL * k as u32;
        while first_audio.is_none() && Instant::now() < due {
            if let Ok(Some(TtsEvent::Audio(_))) =
                stream.recv_timeout(due.saturating_duration_since(Instant::now()))
            {
                first_audio = Some(Instant::now());
            }
        }
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        stream.push_text(token).expect("queued");
        chunker.push(token);
        if first_cut_at.is_none() && chunker.poll().is_some() {
            first_cut_at = Some(Instant::now());
        }
    }
    stream.finish().expect("queued");
    let first_cut_at = first_cut_at.unwrap_or_else(Instant::now);
    while first_audio.is_none() {
        if let Ok(Some(TtsEvent::Audio(_))) = stream.recv_timeout(Duration::from_secs(30)) {
            first_audio = Some(Instant::now());
        }
    }
    let _ = stream.collect_reply(Duration::from_secs(60));
    let first_audio = first_audio.expect("set above");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(first_audio - start),
        ms(first_audio.saturating_duration_since(first_cut_at)),
    )
}

fn rtf(engine: &TtsEngine, voice: &str) -> f64 {
    let mut stream = engine.open_stream(voice).expect("voice");
    let start = Instant::now();
    stream.push_text(SENTENCE).expect("queued");
    stream.finish().expect("queued");
    let chunks = stream
        .collect_reply(Duration::from_secs(60))
        .expect("audio");
    let compute = start.elapsed().as_secs_f64();
    let samples: usize = chunks.iter().map(|c| c.samples.len()).sum();
    compute / (samples as f64 / engine.sample_rate() as f64)
}

/// `voice`, `voice:words` or `voice:words:frames`: the engine settings, with the first-chunk
/// word cap and Kokoro's frame caps (`asis`, or `lead,punctuation`) overridden.
fn config_for(spec: &str) -> (String, EngineConfig) {
    let mut parts = spec.split(':');
    let voice = parts.next().unwrap_or_default();
    let mut config = engine_config_for_voice(voice);
    if let Some(words) = parts.next().and_then(|w| w.parse().ok()) {
        config.chunker.first_max_words = words;
    }
    match parts.next() {
        Some("asis") => config.kokoro_frames = FrameLimits::UNCHANGED,
        Some(caps) => {
            let caps: Vec<i64> = caps.split(',').filter_map(|c| c.parse().ok()).collect();
            let frames = &mut config.kokoro_frames;
            let fields = [
                &mut frames.leading_pad,
                &mut frames.final_punctuation,
                &mut frames.final_phoneme,
                &mut frames.final_pad,
            ];
            for (field, cap) in fields.into_iter().zip(caps) {
                *field = cap;
            }
        }
        None => {}
    }
    (voice.to_owned(), config)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn summary(name: &str, v: &[f64]) -> String {
    format!(
        "{name} median {:.0} ms (min {:.0}, max {:.0})",
        median(v.to_vec()),
        v.iter().cloned().fold(f64::MAX, f64::min),
        v.iter().cloned().fold(0.0, f64::max)
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let voices: Vec<String> = args.collect();
    let voices = if voices.is_empty() {
        vec!["joe".to_owned(), "af_heart".to_owned()]
    } else {
        voices
    };
    let store = ModelStore::from_env().expect("store");
    let lexicon = Arc::new(Lexicon::load(&store).expect("lexicon"));
    println!(
        "sentence: {:?} ({} words, {} ms per token), {runs} runs, {threads} intra-op threads",
        SENTENCE,
        SENTENCE.split(' ').count(),
        TOKEN_INTERVAL.as_millis()
    );
    for spec in &voices {
        let (voice, config) = config_for(spec);
        let voice = voice.as_str();
        let chunker = config.chunker.clone();
        let before = load_average();
        let loaded = Instant::now();
        let engine = spawn_engine_with_config(&store, lexicon.clone(), voice, threads, config)
            .expect("engine");
        let load_ms = loaded.elapsed().as_secs_f64() * 1000.0;
        // The very first reply after loading, as the first caller would get it.
        let (cold, _) = first_audio(&engine, voice, &chunker, SENTENCE);
        let mut from_start = Vec::new();
        let mut from_cut = Vec::new();
        let mut no_comma = Vec::new();
        let mut rtfs = Vec::new();
        for _ in 0..runs {
            let (a, b) = first_audio(&engine, voice, &chunker, SENTENCE);
            from_start.push(a);
            from_cut.push(b);
            no_comma.push(first_audio(&engine, voice, &chunker, NO_COMMA).0);
            rtfs.push(rtf(&engine, voice));
        }
        println!(
            "{spec:>11}: load {load_ms:.0} ms | first reply after load {cold:.0} ms | {} | {} \
             | {} | RTF median {:.3} (min {:.3}, max {:.3}) | load average {before} -> {}",
            summary("first audio after first token:", &from_start),
            summary("after first-chunk cut:", &from_cut),
            summary("no-comma sentence, first audio:", &no_comma),
            median(rtfs.clone()),
            rtfs.iter().cloned().fold(f64::MAX, f64::min),
            rtfs.iter().cloned().fold(0.0, f64::max),
            load_average(),
        );
    }
}
