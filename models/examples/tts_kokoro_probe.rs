//! Where Kokoro's time goes: one model call measured under different inputs and session options.
//!
//! `cargo run --release -p antiphon-models --example tts_kokoro_probe -- MODE [THREADS] [RUNS]`
//!
//! Modes:
//! - `inputs`: per text, with and without the pad tokens and the final punctuation: tokens,
//!   milliseconds per call, seconds of audio, leading/trailing silence.
//! - `speed`: the same first chunk at speed 1.0–1.3.
//! - `options`: graph optimisation levels, spinning, memory pattern; cold (first call) and warm.
//! - `shapes`: the first call for each new token count vs a repeat of it (is a new shape costly?).
//! - `profile`: onnxruntime's per-node profile of warm calls, summed by operator type.
//! - `chunks TEXT…`: each text as the engine calls the model (both pads): ms and audio.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use antiphon_models::onnx;
use antiphon_models::store::ModelStore;
use antiphon_models::tts::g2p::G2p;
use antiphon_models::tts::kokoro::{KOKORO_MODEL, KOKORO_ONNX, KOKORO_VOCAB, KOKORO_VOICES_MODEL};
use antiphon_models::tts::lexicon::Lexicon;
use antiphon_models::tts::normalize::normalize;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

const RATE: f64 = 24_000.0;
const STYLE_DIM: usize = 256;

struct Probe {
    store: ModelStore,
    g2p: G2p,
    vocab: HashMap<char, i64>,
    style: Vec<f32>,
}

#[derive(Clone, Copy)]
struct Options {
    threads: usize,
    level: GraphOptimizationLevel,
    spinning: bool,
    memory_pattern: bool,
}

impl Probe {
    fn new() -> Self {
        let store = ModelStore::from_env().expect("store");
        let lexicon = Arc::new(Lexicon::load(&store).expect("lexicon"));
        let vocab_text =
            std::fs::read_to_string(store.file(KOKORO_MODEL, KOKORO_VOCAB).expect("vocab"))
                .expect("read vocab");
        let json: serde_json::Value = serde_json::from_str(&vocab_text).expect("vocab json");
        let vocab = json["vocab"]
            .as_object()
            .expect("vocab object")
            .iter()
            .filter_map(|(k, v)| {
                let mut c = k.chars();
                match (c.next(), c.next()) {
                    (Some(ch), None) => Some((ch, v.as_i64()?)),
                    _ => None,
                }
            })
            .collect();
        let bytes = std::fs::read(
            store
                .file(KOKORO_VOICES_MODEL, "af_heart.bin")
                .expect("voice"),
        )
        .expect("read voice");
        let style = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Self {
            store,
            g2p: G2p::new(lexicon),
            vocab,
            style,
        }
    }

    fn session(&self, o: Options, profile: Option<&str>) -> Session {
        let env = onnx::environment(&self.store).expect("env");
        let mut b = Session::builder(&env)
            .expect("builder")
            .with_optimization_level(o.level)
            .expect("level")
            .with_intra_threads(o.threads)
            .expect("threads")
            .with_inter_threads(1)
            .expect("inter")
            .with_intra_op_spinning(o.spinning)
            .expect("spin")
            .with_memory_pattern(o.memory_pattern)
            .expect("mem");
        if let Some(p) = profile {
            b = b.with_profiling(p).expect("profiling");
        }
        b.commit_from_file(self.store.file(KOKORO_MODEL, KOKORO_ONNX).expect("model"))
            .expect("session")
    }

    fn phonemes(&self, text: &str) -> String {
        self.g2p.phonemize(&normalize(text))
    }

    fn ids(&self, phonemes: &str, pads: bool) -> Vec<i64> {
        let mut ids: Vec<i64> = phonemes
            .chars()
            .filter_map(|c| self.vocab.get(&c).copied())
            .collect();
        if pads {
            ids.insert(0, 0);
            ids.push(0);
        }
        ids
    }

    /// One call: (milliseconds, audio).
    fn call(&self, session: &mut Session, ids: &[i64], speed: f32) -> (f64, Vec<f32>) {
        let row = ids.len().saturating_sub(2).min(509);
        let style = self.style[row * STYLE_DIM..(row + 1) * STYLE_DIM].to_vec();
        let start = Instant::now();
        let tokens = Tensor::from_array(([1usize, ids.len()], ids.to_vec())).expect("tokens");
        let style = Tensor::from_array(([1usize, STYLE_DIM], style)).expect("style");
        let speed = Tensor::from_array(([1usize], vec![speed])).expect("speed");
        let out = session
            .run(ort::inputs!["tokens" => tokens, "style" => style, "speed" => speed])
            .expect("run");
        let (_, audio) = out["audio"].try_extract_tensor::<f32>().expect("audio");
        let audio = audio.to_vec();
        (start.elapsed().as_secs_f64() * 1000.0, audio)
    }

    fn median_call(
        &self,
        session: &mut Session,
        ids: &[i64],
        speed: f32,
        runs: usize,
    ) -> (f64, Vec<f32>) {
        let mut times = Vec::new();
        let mut audio = Vec::new();
        for _ in 0..runs {
            let (ms, a) = self.call(session, ids, speed);
            times.push(ms);
            audio = a;
        }
        (median(times), audio)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (leading silence ms, speech ms, trailing silence ms) at 1 % of the peak, like `shape`.
fn silences(audio: &[f32]) -> (f64, f64, f64) {
    let peak = audio.iter().fold(0f32, |m, x| m.max(x.abs()));
    let t = (peak * 0.01).max(2e-3);
    let first = audio.iter().position(|x| x.abs() > t).unwrap_or(0);
    let last = audio.iter().rposition(|x| x.abs() > t).unwrap_or(0);
    let ms = |n: usize| n as f64 / RATE * 1000.0;
    (
        ms(first),
        ms(last.saturating_sub(first)),
        ms(audio.len().saturating_sub(last + 1)),
    )
}

const TEXTS: [&str; 6] = [
    "Sure,",
    "Sure, I can",
    "Well then,",
    "the quick brown fox jumps over",
    "I can book a table for four people at the Italian place tomorrow evening.",
    "Sure, I can book a table for four people at the Italian place tomorrow evening.",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "inputs".into());
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let probe = Probe::new();
    let default = Options {
        threads,
        level: GraphOptimizationLevel::Level3,
        spinning: false,
        memory_pattern: true,
    };
    match mode.as_str() {
        "inputs" => {
            let mut s = probe.session(default, None);
            probe.call(&mut s, &probe.ids("ʃˈʊɹ", true), 1.0);
            println!("text | variant | tokens | ms | audio s | lead ms | speech ms | trail ms");
            for text in TEXTS {
                let ph = probe.phonemes(text);
                let bare = ph
                    .trim_end_matches([',', '.', '!', '?', ';', ':'])
                    .to_owned();
                for (name, phon, pads) in [
                    ("pads+punct", ph.as_str(), true),
                    ("no pads", ph.as_str(), false),
                    ("pads, no final punct", bare.as_str(), true),
                    ("no pads, no final punct", bare.as_str(), false),
                ] {
                    let ids = probe.ids(phon, pads);
                    let (ms, audio) = probe.median_call(&mut s, &ids, 1.0, runs);
                    let (lead, speech, trail) = silences(&audio);
                    println!(
                        "{text:?} [{ph}] | {name} | {} | {ms:.0} | {:.2} | {lead:.0} | {speech:.0} | {trail:.0}",
                        ids.len(),
                        audio.len() as f64 / RATE
                    );
                }
            }
        }
        "speed" => {
            let mut s = probe.session(default, None);
            for text in [TEXTS[0], TEXTS[5]] {
                let ids = probe.ids(&probe.phonemes(text), true);
                probe.call(&mut s, &ids, 1.0);
                for speed in [1.0f32, 1.1, 1.2, 1.3] {
                    let (ms, audio) = probe.median_call(&mut s, &ids, speed, runs);
                    let (lead, speech, trail) = silences(&audio);
                    println!(
                        "{text:?} speed {speed}: {ms:.0} ms, {:.2} s audio, lead {lead:.0} speech {speech:.0} trail {trail:.0} ms",
                        audio.len() as f64 / RATE
                    );
                }
            }
        }
        "options" => {
            let ids = probe.ids(&probe.phonemes(TEXTS[0]), true);
            let long = probe.ids(&probe.phonemes(TEXTS[5]), true);
            for (name, o) in [
                ("Level3", default),
                (
                    "Level1 (basic)",
                    Options {
                        level: GraphOptimizationLevel::Level1,
                        ..default
                    },
                ),
                (
                    "Level2 (extended)",
                    Options {
                        level: GraphOptimizationLevel::Level2,
                        ..default
                    },
                ),
                (
                    "All",
                    Options {
                        level: GraphOptimizationLevel::All,
                        ..default
                    },
                ),
                (
                    "Disable",
                    Options {
                        level: GraphOptimizationLevel::Disable,
                        ..default
                    },
                ),
                (
                    "Level3 + spinning",
                    Options {
                        spinning: true,
                        ..default
                    },
                ),
                (
                    "Level3, no memory pattern",
                    Options {
                        memory_pattern: false,
                        ..default
                    },
                ),
            ] {
                let t = Instant::now();
                let mut s = probe.session(o, None);
                let load = t.elapsed().as_secs_f64() * 1000.0;
                let (cold, _) = probe.call(&mut s, &ids, 1.0);
                let (warm, _) = probe.median_call(&mut s, &ids, 1.0, runs);
                let (sentence, _) = probe.median_call(&mut s, &long, 1.0, runs.min(3));
                println!(
                    "{name}: load {load:.0} ms | \"Sure,\" first call {cold:.0} ms, warm {warm:.0} ms | 15 words {sentence:.0} ms"
                );
            }
        }
        "shapes" => {
            let mut s = probe.session(default, None);
            let (cold, _) = probe.call(&mut s, &probe.ids("ʃˈʊɹ", true), 1.0);
            println!("first call after load: {cold:.0} ms");
            for text in TEXTS {
                let ids = probe.ids(&probe.phonemes(text), true);
                let (first, _) = probe.call(&mut s, &ids, 1.0);
                let (again, _) = probe.median_call(&mut s, &ids, 1.0, runs);
                println!(
                    "{text:?} ({} tokens): first {first:.0} ms, then {again:.0} ms",
                    ids.len()
                );
            }
        }
        "profile" => {
            let path = std::env::temp_dir().join("kokoro_profile");
            let mut s = probe.session(default, Some(path.to_str().expect("utf-8 temp dir")));
            let ids = probe.ids(&probe.phonemes(TEXTS[0]), true);
            for _ in 0..runs {
                probe.call(&mut s, &ids, 1.0);
            }
            let file = s.end_profiling().expect("profile");
            let text = std::fs::read_to_string(&file).expect("read profile");
            let events: Vec<serde_json::Value> = serde_json::from_str(&text).expect("json");
            let mut by_op: HashMap<String, f64> = HashMap::new();
            let mut by_node: HashMap<String, f64> = HashMap::new();
            let mut total = 0.0;
            for e in &events {
                if e["cat"] != "Node" {
                    continue;
                }
                let name = e["name"].as_str().unwrap_or("");
                if !name.ends_with("_kernel_time") {
                    continue;
                }
                let us = e["dur"].as_f64().unwrap_or(0.0);
                let op = e["args"]["op_name"].as_str().unwrap_or("?").to_owned();
                *by_op.entry(op).or_default() += us;
                *by_node.entry(name.to_owned()).or_default() += us;
                total += us;
            }
            let per_run = |us: f64| us / 1000.0 / runs as f64;
            println!(
                "profile {file}: {:.0} ms of kernels per call",
                per_run(total)
            );
            let mut ops: Vec<_> = by_op.into_iter().collect();
            ops.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (op, us) in ops.iter().take(15) {
                println!("  {op:<24} {:>7.1} ms", per_run(*us));
            }
            let mut nodes: Vec<_> = by_node.into_iter().collect();
            nodes.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (node, us) in nodes.iter().take(25) {
                println!("  {node:<90} {:>7.1} ms", per_run(*us));
            }
        }
        "chunks" => {
            let mut s = probe.session(default, None);
            probe.call(&mut s, &probe.ids("ʃˈʊɹ", true), 1.0);
            for text in args {
                let ids = probe.ids(&probe.phonemes(&text), true);
                let (ms, audio) = probe.median_call(&mut s, &ids, 1.0, runs);
                let (lead, speech, trail) = silences(&audio);
                println!(
                    "{text:?}: {ms:.0} ms, {:.2} s audio (lead {lead:.0}, speech {speech:.0}, trail {trail:.0} ms)",
                    audio.len() as f64 / RATE
                );
            }
        }
        other => {
            eprintln!("unknown mode {other:?}: inputs, speed, options, shapes, profile, chunks")
        }
    }
}
