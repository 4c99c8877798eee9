//! TTS latency and speed: time to first audio for a 15-word sentence arriving token by token at
//! 20 tokens/s, and the real-time factor of whole-sentence synthesis, per engine.
//!
//! `cargo run --release -p antiphon-models --example tts_bench -- [RUNS] [THREADS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use antiphon_models::store::ModelStore;
use antiphon_models::tts::chunker::{ChunkerConfig, TextChunker};
use antiphon_models::tts::lexicon::Lexicon;
use antiphon_models::tts::load::spawn_engine_for_voice;
use antiphon_models::tts::{TtsEngine, TtsEvent};

const SENTENCE: &str =
    "Sure, I can book a table for four people at the Italian place tomorrow evening.";
const TOKEN_INTERVAL: Duration = Duration::from_millis(50);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Feeds SENTENCE word by word on a 50 ms clock; returns (ms from first token to first
/// audio, ms from the token that completed the first chunk to first audio).
fn first_audio(engine: &TtsEngine, voice: &str) -> (f64, f64) {
    let mut stream = engine.open_stream(voice).expect("voice");
    let tokens: Vec<String> = SENTENCE
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
    let mut chunker = TextChunker::new(ChunkerConfig::default());
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

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let store = ModelStore::from_env().expect("store");
    let lexicon = Arc::new(Lexicon::load(&store).expect("lexicon"));
    println!(
        "sentence: {:?} ({} words, {} ms per token), {runs} runs, {threads} intra-op threads",
        SENTENCE,
        SENTENCE.split(' ').count(),
        TOKEN_INTERVAL.as_millis()
    );
    for voice in ["joe", "af_heart"] {
        let loaded = Instant::now();
        let engine =
            spawn_engine_for_voice(&store, lexicon.clone(), voice, threads).expect("engine");
        let load_ms = loaded.elapsed().as_secs_f64() * 1000.0;
        rtf(&engine, voice); // warm-up
        let mut from_start = Vec::new();
        let mut from_cut = Vec::new();
        let mut rtfs = Vec::new();
        for _ in 0..runs {
            let (a, b) = first_audio(&engine, voice);
            from_start.push(a);
            from_cut.push(b);
            rtfs.push(rtf(&engine, voice));
        }
        println!(
            "{voice:>9}: load {load_ms:.0} ms | first audio after first token: median {:.0} ms \
             (min {:.0}, max {:.0}) | after first-chunk cut: median {:.0} ms | RTF median {:.3} (min {:.3}, max {:.3})",
            median(from_start.clone()),
            from_start.iter().cloned().fold(f64::MAX, f64::min),
            from_start.iter().cloned().fold(0.0, f64::max),
            median(from_cut),
            median(rtfs.clone()),
            rtfs.iter().cloned().fold(f64::MAX, f64::min),
            rtfs.iter().cloned().fold(0.0, f64::max),
        );
    }
}
