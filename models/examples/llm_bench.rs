//! LLM engine benchmark: prefill tokens/s, decode tokens/s at batch 1/4/8, and new-turn TTFT
//! with ~500 tokens of cached history and a ~20-token user turn.
//!
//! `CANDLE_NUM_THREADS=2 cargo run --release -p antiphon-models --example llm_bench -- smollm2`
//! (or `qwen`). Prints medians.

use std::sync::Arc;
use std::time::Instant;

use antiphon_models::llm::{
    self, ChatSession, EngineConfig, LlmEngine, LoadOptions, QuantLm, ReplyEvent, SamplingParams,
    StepSeq,
};
use antiphon_models::store::ModelStore;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A filler text of about `n` tokens.
fn filler(m: &QuantLm, n: usize) -> String {
    let sentence = "The quick brown fox jumps over the lazy dog near the quiet river bank. ";
    let mut s = String::new();
    while m.tokenizer.encode(&s).map(|t| t.len()).unwrap_or(0) < n {
        s.push_str(sentence);
    }
    s
}

fn prefill_tps(m: &QuantLm, tokens: &[u32], chunk: usize) -> f64 {
    let mut kv = m.new_cache();
    let t0 = Instant::now();
    for c in tokens.chunks(chunk) {
        m.forward(&mut [StepSeq {
            tokens: c,
            kv: &mut kv,
        }])
        .expect("forward");
    }
    tokens.len() as f64 / t0.elapsed().as_secs_f64()
}

fn decode_tps(m: &QuantLm, batch: usize, steps: usize) -> f64 {
    let prompt = m
        .tokenizer
        .encode("Once upon a time, in a land far away,")
        .expect("enc");
    let mut kvs: Vec<_> = (0..batch).map(|_| m.new_cache()).collect();
    for kv in &mut kvs {
        m.forward(&mut [StepSeq {
            tokens: &prompt,
            kv,
        }])
        .expect("prefill");
    }
    let toks: Vec<[u32; 1]> = (0..batch).map(|i| [prompt[i % prompt.len()]]).collect();
    let t0 = Instant::now();
    for _ in 0..steps {
        let mut seqs: Vec<StepSeq<'_>> = kvs
            .iter_mut()
            .zip(&toks)
            .map(|(kv, t)| StepSeq { tokens: t, kv })
            .collect();
        m.forward(&mut seqs).expect("decode");
    }
    (batch * steps) as f64 / t0.elapsed().as_secs_f64()
}

/// Greedy replies with and without Q8_0 re-quantization: how repetitive is each?
fn loop_check(store: &ModelStore, known: llm::KnownModel) {
    let prompts = [
        "Tell me about the moon.",
        "What is the capital of France?",
        "Give me three tips for sleeping well.",
    ];
    for (requantize, penalty) in [(false, 1.0), (true, 1.0), (true, 1.3)] {
        let opts = LoadOptions {
            requantize_to_q8: requantize,
            ..LoadOptions::default()
        };
        let m = Arc::new(llm::load_known(store, known, opts).expect("load"));
        let eng = LlmEngine::start(m, EngineConfig::default()).expect("engine");
        for p in prompts {
            let mut s = eng.session(None).expect("session");
            let params = SamplingParams {
                max_tokens: 160,
                repeat_penalty: penalty,
                ..Default::default()
            };
            let mut st = s.send(p, &params).expect("turn");
            let (text, done) = st.collect_text();
            let words: Vec<&str> = text.split_whitespace().collect();
            let grams: std::collections::HashSet<_> = words.windows(4).collect();
            let distinct = grams.len() as f64 / words.len().saturating_sub(3).max(1) as f64;
            let reason = match done {
                Some(ReplyEvent::Done {
                    reason, generated, ..
                }) => format!("{reason:?} after {generated} tokens"),
                other => format!("{other:?}"),
            };
            println!(
                "requantize={requantize} repeat_penalty={penalty} prompt={p:?}: {reason}, distinct 4-grams {:.0}%\n  {:?}",
                distinct * 100.0,
                text.chars().take(300).collect::<String>()
            );
        }
    }
}

/// The new-turn prefill (27 tokens after 500 cached) repeated, for profilers (`perf record`).
fn turn_loop(store: &ModelStore, known: llm::KnownModel) {
    let m = llm::load_known(store, known, bench_options()).expect("load");
    let long = m.tokenizer.encode(&filler(&m, 512)).expect("enc");
    let mut kv = m.new_cache();
    for c in long[..500].chunks(128) {
        m.forward(&mut [StepSeq {
            tokens: c,
            kv: &mut kv,
        }])
        .expect("prefill");
    }
    let reps: usize = std::env::var("TURN_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut ms = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..reps {
        kv.truncate(500);
        let (t0, c0) = (Instant::now(), thread_cpu_ms());
        m.forward(&mut [StepSeq {
            tokens: &long[..27],
            kv: &mut kv,
        }])
        .expect("turn");
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        cpu.push(thread_cpu_ms() - c0);
    }
    println!(
        "27 new tokens after 500 cached: median {:.1} ms wall, {:.1} ms on-CPU (calling thread) over {reps}",
        median(ms),
        median(cpu)
    );
}

/// Issue 17's fairness case: three callers with long instructions (`FAIR_PROMPT_TOKENS`,
/// default 2000) start their turns, then a fourth with a short one. Its first-token time and
/// its reply rate, with the step budget alone and with the fair share
/// (`decode_step_target`), in one run: `-- qwen fairness`.
fn fairness(store: &ModelStore, known: llm::KnownModel) {
    let m = Arc::new(llm::load_known(store, known, bench_options()).expect("load"));
    let n: usize = std::env::var("FAIR_PROMPT_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let long_system = filler(&m, n);
    let params = SamplingParams {
        max_tokens: 24,
        temperature: 0.0,
        ..Default::default()
    };
    for target in [None, EngineConfig::default().decode_step_target] {
        let eng = LlmEngine::start(
            m.clone(),
            EngineConfig {
                decode_step_target: target,
                ..EngineConfig::default()
            },
        )
        .expect("engine");
        let t0 = Instant::now();
        let mut long: Vec<_> = (0..3)
            .map(|k| {
                let mut s = eng.session(Some(&long_system)).expect("session");
                let st = s
                    .send(&format!("Summarize that, caller {k}."), &params)
                    .expect("turn");
                (s, st)
            })
            .collect();
        let mut short = eng.session(Some("Be brief.")).expect("session");
        let asked = Instant::now();
        let mut st = short.send("What is two plus two?", &params).expect("turn");
        let mut first = None;
        let mut tokens = 0;
        while let Some(ev) = st.next_event() {
            match ev {
                ReplyEvent::Text { .. } => {
                    tokens += 1;
                    first.get_or_insert_with(|| asked.elapsed().as_secs_f64());
                }
                _ => break,
            }
        }
        let whole = asked.elapsed().as_secs_f64();
        let first = first.unwrap_or(f64::NAN);
        let rate = (tokens as f64 - 1.0).max(0.0) / (whole - first);
        let long_done: Vec<f64> = long
            .iter_mut()
            .map(|(_, st)| {
                st.collect_text();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        println!(
            "decode_step_target {target:?}: short caller first text {first:.2} s, {tokens} pieces \
             at {rate:.1}/s, reply done {whole:.2} s; the {n}-token callers done at {:.1} s",
            long_done.iter().copied().fold(0.0, f64::max)
        );
    }
}

/// Time this thread has spent on a CPU (Linux schedstat), in ms: unlike wall time it does not
/// count time the scheduler gave to other processes on the shared box. NaN elsewhere.
fn thread_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e6)
}

/// Load options from the environment: `LLM_DENSE_PREFILL=1`, `LLM_Q8_KERNEL=0`.
fn bench_options() -> LoadOptions {
    let flag = |name: &str| std::env::var(name).ok();
    LoadOptions {
        dense_prefill: flag("LLM_DENSE_PREFILL").is_some_and(|v| v == "1"),
        q8_kernel: flag("LLM_Q8_KERNEL").is_none_or(|v| v != "0"),
        ..LoadOptions::default()
    }
}

fn main() {
    let alias = std::env::args().nth(1).unwrap_or_else(|| "smollm2".into());
    let known = llm::known_model(&alias).expect("model alias: smollm2 or qwen");
    let store = ModelStore::from_env().expect("store");
    if std::env::args().nth(2).as_deref() == Some("loop-check") {
        loop_check(&store, known);
        return;
    }
    if std::env::args().nth(2).as_deref() == Some("fairness") {
        fairness(&store, known);
        return;
    }
    if std::env::args().nth(2).as_deref() == Some("turn-loop") {
        turn_loop(&store, known);
        return;
    }
    let opts = bench_options();
    let dense = opts.dense_prefill;
    println!(
        "q8 kernel: {} (LLM_Q8_KERNEL=0 turns it off; CPU has AVX-512 VNNI: {})",
        opts.q8_kernel && llm::q8gemm::available(),
        llm::q8gemm::available()
    );
    let t0 = Instant::now();
    let m = Arc::new(llm::load_known(&store, known, opts).expect("load"));
    println!("dense_prefill: {dense}");
    println!(
        "model {} ({}) loaded in {:.2}s",
        known.id,
        m.config.name,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "threads: CANDLE_NUM_THREADS={:?}",
        std::env::var("CANDLE_NUM_THREADS").ok()
    );

    let long = m.tokenizer.encode(&filler(&m, 512)).expect("enc");
    let long = &long[..512];
    let pf: Vec<f64> = (0..3).map(|_| prefill_tps(&m, long, 128)).collect();
    println!(
        "prefill 512 tokens (chunks of 128): median {:.0} tok/s  {pf:.0?}",
        median(pf.clone())
    );

    let mut base = 0.0;
    for b in [1, 4, 8] {
        let runs: Vec<f64> = (0..3).map(|_| decode_tps(&m, b, 24)).collect();
        let med = median(runs.clone());
        if b == 1 {
            base = med;
        }
        println!(
            "decode batch {b}: median {med:.1} tok/s aggregate ({:.2}x batch 1)  {runs:.1?}",
            med / base
        );
    }

    // The same new turn straight on the model (no engine): prefill 27 tokens after 500 cached.
    let mut direct = Vec::new();
    for _ in 0..5 {
        let mut kv = m.new_cache();
        for c in long[..500].chunks(128) {
            m.forward(&mut [StepSeq {
                tokens: c,
                kv: &mut kv,
            }])
            .expect("prefill");
        }
        let t0 = Instant::now();
        m.forward(&mut [StepSeq {
            tokens: &long[..27],
            kv: &mut kv,
        }])
        .expect("turn");
        direct.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "model-only: 27 new tokens after 500 cached: median {:.0} ms  {direct:.0?}",
        median(direct.clone())
    );

    // New-turn TTFT through the engine with ~500 cached tokens of history.
    let eng = LlmEngine::start(m.clone(), EngineConfig::default()).expect("engine");
    let mut s = eng.session(None).expect("session");
    let history = filler(&m, 470);
    let greedy = |n| SamplingParams {
        max_tokens: n,
        ..Default::default()
    };
    let (_, _) = s
        .send(&format!("Remember this text: {history}"), &greedy(8))
        .expect("turn")
        .collect_text();
    let user = "Now tell me, in one short sentence, what animal jumped over the dog?";
    println!(
        "user turn: {} tokens",
        eng.format()
            .user_turn(&m.tokenizer, user)
            .expect("enc")
            .len()
    );
    let mut ttft = Vec::new();
    let mut prefilled = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut st = s.send(user, &greedy(4)).expect("turn");
        let mut first = None;
        while let Some(ev) = st.next_event() {
            match ev {
                ReplyEvent::Text { .. } if first.is_none() => {
                    first = Some(t0.elapsed().as_secs_f64() * 1000.0)
                }
                ReplyEvent::Done {
                    prefilled: p,
                    generated,
                    ..
                } => {
                    prefilled.push(p);
                    // A reply whose first token ends the turn still had a first token.
                    if first.is_none() && generated > 0 {
                        first = Some(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                _ => {}
            }
        }
        ttft.push(first.unwrap_or(f64::NAN));
        // Keep the history about the same size: only 0 bytes of the reply were "spoken".
        s.truncate_reply(st.request_id(), 0).expect("truncate");
    }
    println!(
        "new-turn TTFT (~500 cached tokens + {:?} new): median {:.0} ms  {ttft:.0?}",
        prefilled,
        median(ttft.clone())
    );
}
