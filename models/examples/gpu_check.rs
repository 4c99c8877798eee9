//! Every GPU check and benchmark in one run, for a machine with a CUDA GPU
//! (`scripts/gpu-check.sh` runs it there; see docs/GPU.md):
//!
//! 1. each NVRTC kernel against its CPU twin on random inputs;
//! 2. the GPU LLM against the CPU LLM on real weights (SmolLM2 cut to its first layers): per-layer
//!    hidden states, last-row logits, greedy tokens;
//! 3. batched GPU decode against one sequence at a time;
//! 4. the unchanged engine (continuous batching, sessions) driving the GPU model;
//! 5. throughput with synthetic weights of the real Qwen2.5-0.5B shapes (GGUF header only):
//!    decode tok/s at batch 1/16/64/256, new-turn TTFT after a 500-token cached prefix, KV bytes
//!    per session, and the memory-bandwidth floor.
//!
//! 6. with `--campplus` and `--wav`: speaker embeddings (CAM++) from the GPU fbank front end
//!    against the CPU one on real speech, and the front end's time for a tick of 256 windows.
//!
//! `gpu_check [--smollm FILE.gguf] [--qwen-header FILE.gguf] [--campplus FILE.pt --wav FILE.wav]
//! [--device N]`: sections without their files are skipped. Prints one summary and exits 1 if
//! any check failed, 2 if the GPU cannot be opened.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use antiphon_kernels::cuda::{self, Gpu, check::Check};
use antiphon_models::llm::gpu::{GpuLm, GpuOptions};
use antiphon_models::llm::{
    ChatFormat, EngineConfig, LlmEngine, LoadOptions, Pick, QuantLm, SamplingParams, StepModel,
    StepSeq,
};

struct Args {
    smollm: Option<PathBuf>,
    qwen_header: Option<PathBuf>,
    campplus: Option<PathBuf>,
    wav: Option<PathBuf>,
    device: usize,
}

fn args() -> Result<Args, String> {
    let mut a = std::env::args().skip(1);
    let (mut smollm, mut qwen, mut device) = (None, None, 0);
    let (mut campplus, mut wav) = (None, None);
    while let Some(k) = a.next() {
        let mut v = || a.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--smollm" => smollm = Some(PathBuf::from(v()?)),
            "--qwen-header" => qwen = Some(PathBuf::from(v()?)),
            "--campplus" => campplus = Some(PathBuf::from(v()?)),
            "--wav" => wav = Some(PathBuf::from(v()?)),
            "--device" => device = v()?.parse().map_err(|e| format!("--device: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        smollm,
        qwen_header: qwen,
        campplus,
        wav,
        device,
    })
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

fn argmax(xs: &[f32]) -> usize {
    antiphon_models::llm::sampling::argmax(xs) as usize
}

/// Top-2 margin of a logits row.
fn margin(xs: &[f32]) -> f32 {
    let best = argmax(xs);
    let second = xs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, v)| *v)
        .fold(f32::NEG_INFINITY, f32::max);
    xs[best] - second
}

fn check(name: &str, passed: bool, detail: String) -> Check {
    let c = Check {
        name: name.into(),
        passed,
        detail,
    };
    println!("{c}");
    c
}

/// GPU greedy continuation of one fresh sequence.
fn gpu_greedy(m: &GpuLm, prompt: &[u32], steps: usize) -> Result<Vec<u32>, String> {
    let mut kv = StepModel::new_cache(m);
    let mut out = Vec::new();
    let mut feed = prompt.to_vec();
    for _ in 0..steps {
        let t = m
            .step(
                &mut [StepSeq {
                    tokens: &feed,
                    kv: &mut kv,
                }],
                &[Some(Pick::GREEDY)],
            )
            .map_err(|e| e.to_string())?[0]
            .ok_or("no token")?;
        out.push(t);
        feed = vec![t];
    }
    Ok(out)
}

fn llm_equivalence(gpu: &Arc<Gpu>, path: &Path, out: &mut Vec<Check>) -> Result<GpuLm, String> {
    let cpu = QuantLm::load(
        path,
        LoadOptions {
            requantize_to_q8: false,
            max_positions: 2048,
            dense_prefill: true,
            q8_kernel: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let opts = GpuOptions {
        max_positions: 2048,
        kv_tokens: 64 * 1024,
        synthetic: false,
        cuda_graphs: true,
    };
    let g = GpuLm::load(gpu.clone(), path, &opts).map_err(|e| e.to_string())?;
    println!(
        "  model: {} ({} layers, hidden {}, {} heads / {} KV), {:.1} MB of bf16 weights on the GPU",
        g.config.name,
        g.config.n_layers,
        g.config.hidden,
        g.config.n_heads,
        g.config.n_kv_heads,
        g.weight_bytes() as f64 / 1e6
    );
    let format = ChatFormat::new(&g.tokenizer, &g.config.chat_template, g.config.eos_token)
        .map_err(|e| e.to_string())?;
    let mut prompt = format
        .system(&g.tokenizer, None)
        .map_err(|e| e.to_string())?;
    prompt.extend(
        format
            .user_turn(
                &g.tokenizer,
                "What is the capital of France, and why is it famous?",
            )
            .map_err(|e| e.to_string())?,
    );
    // Prefill rows run the CPU model's dense f32 path: no activation quantization on either side.
    let (cpu_hidden, cpu_logits) = cpu.trace(&prompt).map_err(|e| e.to_string())?;
    let t = g.trace(&prompt).map_err(|e| e.to_string())?;
    let errs: Vec<f64> = t
        .hidden
        .iter()
        .zip(&cpu_hidden)
        .map(|(a, b)| rel_l2(a, b))
        .collect();
    let worst = errs.iter().copied().fold(0.0, f64::max);
    out.push(check(
        "LLM hidden states per layer",
        errs.len() == cpu_hidden.len() && worst <= 1e-2,
        format!(
            "{} prompt tokens, rel L2 per layer {}",
            prompt.len(),
            errs.iter()
                .map(|e| format!("{e:.1e}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    ));
    let cos = cosine(&t.logits, &cpu_logits);
    let max_diff = t
        .logits
        .iter()
        .zip(&cpu_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    out.push(check(
        "LLM last-row logits",
        cos >= 0.999,
        format!("cosine {cos:.6}, max abs diff {max_diff:.3}"),
    ));
    // Greedy continuation: GPU (device sampling) vs CPU (host argmax); they may part only where
    // the CPU's top-2 margin is within twice the measured logit difference.
    let steps = 24;
    let gpu_toks = gpu_greedy(&g, &prompt, steps)?;
    let mut kv = cpu.new_cache();
    let mut feed = prompt.clone();
    let mut parted = None;
    let mut same = 0;
    for (i, &gt) in gpu_toks.iter().enumerate() {
        let logits = cpu
            .forward(&mut [StepSeq {
                tokens: &feed,
                kv: &mut kv,
            }])
            .map_err(|e| e.to_string())?
            .flatten_all()
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        let ct = argmax(&logits) as u32;
        if ct != gt {
            parted = Some((i, margin(&logits)));
            break;
        }
        same += 1;
        feed = vec![ct];
    }
    let (ok, detail) = match parted {
        None => (true, format!("{same}/{steps} greedy tokens equal")),
        Some((i, m)) => (
            m <= 2.0 * max_diff,
            format!(
                "equal for {i} tokens, then a near-tie (CPU top-2 margin {m:.3}, logit diff {max_diff:.3})"
            ),
        ),
    };
    out.push(check("LLM greedy tokens vs CPU", ok, detail));
    println!("  GPU continuation: {:?}", g.tokenizer.decode(&gpu_toks));
    Ok(g)
}

fn batched_equals_single(g: &GpuLm, out: &mut Vec<Check>) -> Result<(), String> {
    let texts = [
        "Tell me a joke about cats.",
        "How far is the moon?",
        "Name three primary colours.",
        "What does a compiler do?",
        "Describe the sea in one sentence.",
        "Why is the sky blue?",
        "Count from one to five.",
        "Say hello in French.",
    ];
    let format = ChatFormat::new(&g.tokenizer, &g.config.chat_template, g.config.eos_token)
        .map_err(|e| e.to_string())?;
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| format.user_turn(&g.tokenizer, t).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let steps = 16;
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| gpu_greedy(g, p, steps))
        .collect::<Result<_, _>>()?;
    let batch = |graphs: bool| -> Result<Vec<Vec<u32>>, String> {
        g.set_cuda_graphs(graphs);
        let mut kvs: Vec<_> = prompts.iter().map(|_| StepModel::new_cache(g)).collect();
        let mut feeds = prompts.clone();
        let mut together = vec![Vec::new(); prompts.len()];
        let picks = vec![Some(Pick::GREEDY); prompts.len()];
        for _ in 0..steps {
            let mut seqs: Vec<StepSeq<'_>> = feeds
                .iter()
                .zip(kvs.iter_mut())
                .map(|(f, kv)| StepSeq { tokens: f, kv })
                .collect();
            let ids = g.step(&mut seqs, &picks).map_err(|e| e.to_string())?;
            for (i, id) in ids.into_iter().enumerate() {
                let id = id.ok_or("no token")?;
                together[i].push(id);
                feeds[i] = vec![id];
            }
        }
        Ok(together)
    };
    let plain = batch(false)?;
    let together = batch(true)?;
    let equal = alone.iter().zip(&together).filter(|(a, b)| a == b).count();
    out.push(check(
        "GPU batched decode == one at a time",
        equal == prompts.len(),
        format!("{equal}/{} sequences identical over {steps} greedy tokens (prefill of 8 mixed lengths in one step)", prompts.len()),
    ));
    out.push(check(
        "CUDA graph decode == plain launches",
        plain == together,
        format!(
            "8 sequences x {steps} greedy tokens, {}",
            if plain == together {
                "identical"
            } else {
                "different"
            }
        ),
    ));
    Ok(())
}

fn engine_drives_gpu(g: GpuLm, out: &mut Vec<Check>) -> Result<(), String> {
    let model: Arc<dyn StepModel> = Arc::new(g);
    let engine = LlmEngine::start(model, EngineConfig::default()).map_err(|e| e.to_string())?;
    let mut handles = Vec::new();
    for i in 0..4 {
        let engine = engine.clone();
        handles.push(std::thread::spawn(
            move || -> Result<(usize, String), String> {
                let mut s = engine.session(None).map_err(|e| e.to_string())?;
                let params = SamplingParams {
                    max_tokens: 12,
                    temperature: if i % 2 == 0 { 0.0 } else { 0.8 },
                    top_p: 0.9,
                    repeat_penalty: 1.1,
                    seed: i,
                    ..Default::default()
                };
                let mut r = s
                    .turn("Say something about the weather.", &params)
                    .map_err(|e| e.to_string())?;
                let (text, last) = r.collect_text();
                Ok((text.len(), format!("{last:?}")))
            },
        ));
    }
    let mut done = 0;
    let mut detail = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok((bytes, last))) => {
                done += (last.contains("Done")) as usize;
                detail.push(format!("{bytes} B"));
            }
            Ok(Err(e)) => detail.push(e),
            Err(_) => detail.push("thread panicked".into()),
        }
    }
    out.push(check(
        "engine on the GPU model (4 sessions)",
        done == 4,
        format!(
            "{done}/4 replies finished ({}), {} steps",
            detail.join(", "),
            engine.steps_started()
        ),
    ));
    Ok(())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn throughput(gpu: &Arc<Gpu>, header: &Path) -> Result<Vec<String>, String> {
    let batches = [1usize, 16, 64, 256];
    let context = 500;
    let opts = GpuOptions {
        max_positions: 4096,
        kv_tokens: 256 * (context + 128) + 4096,
        synthetic: true,
        cuda_graphs: true,
    };
    let t0 = Instant::now();
    let m = GpuLm::load(gpu.clone(), header, &opts).map_err(|e| e.to_string())?;
    let c = m.config.clone();
    let mut lines = vec![format!(
        "synthetic {} shapes: {} layers, hidden {}, ffn {}, {} heads / {} KV, vocab {}; {:.0} MB bf16 weights (loaded in {:.1} s)",
        c.name,
        c.n_layers,
        c.hidden,
        c.ffn,
        c.n_heads,
        c.n_kv_heads,
        c.vocab_size,
        m.weight_bytes() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    )];
    let bw = 4.8e12; // H200 HBM3e, nominal bytes/s (4.3e12 measured by a copy on these machines)
    let floor_s = m.weight_bytes() as f64 / bw;
    let vocab = c.vocab_size as u32;
    lines.push("| batch | ms / step (CUDA graph) | tok/s | ms / step (plain launches) | tok/s | floor ms / step (weights / 4.8 TB/s) | floor / step |".into());
    lines.push("|---|---|---|---|---|---|---|".into());
    let mut profiles = Vec::new();
    for &b in &batches {
        let mut kvs: Vec<_> = (0..b).map(|_| StepModel::new_cache(&m)).collect();
        let prompts: Vec<Vec<u32>> = (0..b)
            .map(|s| {
                (0..context as u32)
                    .map(|i| (i * 7919 + s as u32 * 104_729) % vocab)
                    .collect()
            })
            .collect();
        // Prefill in steps of up to 8 sequences.
        for (kv_chunk, p_chunk) in kvs.chunks_mut(8).zip(prompts.chunks(8)) {
            let mut seqs: Vec<StepSeq<'_>> = kv_chunk
                .iter_mut()
                .zip(p_chunk)
                .map(|(kv, p)| StepSeq { tokens: p, kv })
                .collect();
            let none = vec![None; seqs.len()];
            m.step(&mut seqs, &none).map_err(|e| e.to_string())?;
        }
        let picks = vec![Some(Pick::GREEDY); b];
        let mut feed: Vec<[u32; 1]> = (0..b).map(|i| [(i as u32 * 31) % vocab]).collect();
        let mut step = |feed: &mut Vec<[u32; 1]>| -> Result<(), String> {
            let mut seqs: Vec<StepSeq<'_>> = feed
                .iter()
                .zip(kvs.iter_mut())
                .map(|(f, kv)| StepSeq { tokens: f, kv })
                .collect();
            let ids = m.step(&mut seqs, &picks).map_err(|e| e.to_string())?;
            for (f, id) in feed.iter_mut().zip(ids) {
                f[0] = id.unwrap_or(0);
            }
            Ok(())
        };
        let steps = 32;
        let mut timed = |graphs: bool, feed: &mut Vec<[u32; 1]>| -> Result<f64, String> {
            m.set_cuda_graphs(graphs);
            for _ in 0..3 {
                step(feed)?;
            }
            let t = Instant::now();
            for _ in 0..steps {
                step(feed)?;
            }
            Ok(t.elapsed().as_secs_f64() / steps as f64)
        };
        let plain = timed(false, &mut feed)?;
        let per_step = timed(true, &mut feed)?;
        // One more step, waiting after every operation, to see where a step's time goes.
        m.profile(true);
        step(&mut feed)?;
        let mut by_name: Vec<(&str, f64)> = Vec::new();
        for (name, secs) in m.profile(false) {
            match by_name.iter_mut().find(|(n, _)| *n == name) {
                Some(e) => e.1 += secs,
                None => by_name.push((name, secs)),
            }
        }
        profiles.push(format!(
            "batch {b} step, synced per op (ms): {}",
            by_name
                .iter()
                .map(|(n, s)| format!("{n} {:.3}", s * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        lines.push(format!(
            "| {b} | {:.2} | {:.0} | {:.2} | {:.0} | {:.3} | {:.0} % |",
            per_step * 1e3,
            b as f64 / per_step,
            plain * 1e3,
            b as f64 / plain,
            floor_s * 1e3,
            100.0 * floor_s / per_step
        ));
    }
    lines.extend(profiles);
    // New-turn TTFT: 500 tokens cached, a 24-token user turn, first token id back on the host.
    let mut kv = StepModel::new_cache(&m);
    let prefix: Vec<u32> = (0..context as u32).map(|i| (i * 13) % vocab).collect();
    m.step(
        &mut [StepSeq {
            tokens: &prefix,
            kv: &mut kv,
        }],
        &[None],
    )
    .map_err(|e| e.to_string())?;
    let turn: Vec<u32> = (0..24u32).map(|i| (i * 101 + 7) % vocab).collect();
    let mut times = Vec::new();
    for _ in 0..15 {
        kv.truncate(context);
        let t = Instant::now();
        m.step(
            &mut [StepSeq {
                tokens: &turn,
                kv: &mut kv,
            }],
            &[Some(Pick::GREEDY)],
        )
        .map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
    }
    lines.push(format!(
        "new-turn TTFT (500 cached + 24 new tokens, batch 1, greedy on device): median {:.2} ms",
        median(times) * 1e3
    ));
    let per_tok = m.kv_bytes_per_token();
    lines.push(format!(
        "KV cache: {} B per token (bf16, all layers, K+V); a 1,000-token session {:.1} MB; pages of 16 tokens",
        per_tok,
        per_tok as f64 * 1000.0 / 1e6
    ));
    Ok(lines)
}

fn read_wav(path: &Path) -> Result<Vec<f32>, String> {
    let mut r = hound::WavReader::open(path).map_err(|e| e.to_string())?;
    let spec = r.spec();
    if spec.sample_rate != 16_000 || spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(format!(
            "{}: need 16 kHz mono 16-bit, got {spec:?}",
            path.display()
        ));
    }
    r.samples::<i16>()
        .map(|s| s.map(|v| v as f32 / 32768.0).map_err(|e| e.to_string()))
        .collect()
}

fn speaker_front_end(
    ordinal: usize,
    campplus: &Path,
    wav: &Path,
    out: &mut Vec<Check>,
) -> Result<Vec<String>, String> {
    use antiphon_kernels::fbank::{Fbank, FbankConfig};
    use antiphon_models::diar::embedder::SpeakerEmbedder;
    let audio = read_wav(wav)?;
    // 1.5 s windows every 0.5 s, plus a few of other lengths, as a tick of a server would hold.
    let mut windows: Vec<&[f32]> = (0..)
        .map(|i| i * 8000)
        .take_while(|s| s + 24_000 <= audio.len())
        .map(|s| &audio[s..s + 24_000])
        .collect();
    windows.push(&audio[..32_000.min(audio.len())]);
    windows.push(&audio[audio.len().saturating_sub(20_000)..]);
    let mut cpu = SpeakerEmbedder::from_file(campplus).map_err(|e| e.to_string())?;
    let mut on_gpu = SpeakerEmbedder::from_file(campplus).map_err(|e| e.to_string())?;
    let own = Arc::new(Gpu::open(ordinal).map_err(|e| e.to_string())?);
    on_gpu.use_gpu(own.clone()).map_err(|e| e.to_string())?;
    let a = cpu.embed(&windows).map_err(|e| e.to_string())?;
    let b = on_gpu.embed(&windows).map_err(|e| e.to_string())?;
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| cosine(x, y))
        .fold(1.0f64, f64::min);
    out.push(check(
        "speaker embeddings, GPU vs CPU fbank",
        a.len() == b.len() && a.len() == windows.len() && worst >= 0.9999,
        format!(
            "{} windows of real speech through CAM++, min cosine {worst:.7}",
            windows.len()
        ),
    ));
    // The front end alone for one tick of 256 sessions (1.5 s each): CPU one window at a time
    // (what the engine did) vs one launch.
    let tick: Vec<&[f32]> = (0..256).map(|i| windows[i % windows.len()]).collect();
    let gfb = antiphon_kernels::cuda::fbank::GpuFbank::new(own, FbankConfig::default())
        .map_err(|e| e.to_string())?;
    let mut fb = Fbank::new(FbankConfig::default()).map_err(|e| e.to_string())?;
    let t = Instant::now();
    for w in &tick {
        std::hint::black_box(fb.compute(w));
    }
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
    gfb.compute_batch(&tick).map_err(|e| e.to_string())?; // warm-up
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        std::hint::black_box(gfb.compute_batch(&tick).map_err(|e| e.to_string())?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(vec![format!(
        "fbank for one tick of 256 x 1.5 s windows: CPU (1 thread, window by window) {cpu_ms:.1} ms; GPU (one launch, uploads and download included) median {:.2} ms",
        median(times.iter().map(|t| t / 1e3).collect()) * 1e3
    )])
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_check: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let gpu = match Gpu::open(a.device) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            eprintln!("gpu_check: {e}");
            std::process::exit(2);
        }
    };
    println!("device: {}", gpu.info);
    let mut checks: Vec<Check> = Vec::new();
    println!("== kernels vs CPU twins");
    match cuda::check::run_all(&gpu) {
        Ok(cs) => {
            for c in &cs {
                println!("{c}");
            }
            checks.extend(cs);
        }
        Err(e) => checks.push(check("kernel checks", false, e.to_string())),
    }
    if let Some(smollm) = &a.smollm {
        println!("== LLM on the GPU vs the CPU LLM ({})", smollm.display());
        match llm_equivalence(&gpu, smollm, &mut checks) {
            Ok(g) => {
                if let Err(e) = batched_equals_single(&g, &mut checks) {
                    checks.push(check("GPU batched decode == one at a time", false, e));
                }
                if let Err(e) = engine_drives_gpu(g, &mut checks) {
                    checks.push(check("engine on the GPU model", false, e));
                }
            }
            Err(e) => checks.push(check("LLM equivalence", false, e)),
        }
    }
    let mut bench = Vec::new();
    if let Some(header) = &a.qwen_header {
        println!("== throughput ({})", header.display());
        bench = throughput(&gpu, header)
            .unwrap_or_else(|e| vec![format!("throughput run failed: {e}")]);
        for l in &bench {
            println!("{l}");
        }
    }
    if let (Some(campplus), Some(wav)) = (&a.campplus, &a.wav) {
        println!(
            "== speaker embeddings, GPU vs CPU fbank front end ({})",
            wav.display()
        );
        match speaker_front_end(a.device, campplus, wav, &mut checks) {
            Ok(lines) => {
                for l in &lines {
                    println!("{l}");
                }
                bench.extend(lines);
            }
            Err(e) => checks.push(check("speaker embeddings (GPU front end)", false, e)),
        }
    }
    let passed = checks.iter().filter(|c| c.passed).count();
    let failed = checks.len() - passed;
    println!(
        "\n== summary ({}, {:.0} s)",
        gpu.info,
        started.elapsed().as_secs_f64()
    );
    for c in &checks {
        println!("{c}");
    }
    for l in &bench {
        println!("{l}");
    }
    println!("gpu-check: {passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
