//! Every kernel against its CPU twin on random inputs (run on a GPU machine by
//! `scripts/gpu-check.sh` and by the ignored tests in `kernels/tests/gpu_kernels.rs`).
//!
//! Tolerances: f32 outputs within 1e-5 relative (plus 1e-6 absolute for values near zero);
//! bf16 outputs within one bf16 step of the twin's value, since a last-bit difference in f32
//! (fused multiply-adds, summation order) may round to the neighbouring bf16 value.

use std::sync::Arc;

use super::fbank::GpuFbank;
use super::{CudaError, Gpu, Kernels, LLM_SOURCE};
use crate::fbank::{Fbank, FbankConfig};
use crate::llm_ref::{self, HeadShape, PagedRows, SampleSpec};

/// Outcome of one check.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// What was measured (largest error, agreement, ...).
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.passed { "PASS" } else { "FAIL" };
        write!(f, "{mark}  {:<34} {}", self.name, self.detail)
    }
}

/// A small seedable generator for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.next_u32() as usize % n.max(1)
    }
}

/// Largest relative error of `got` against `want` (absolute `floor` added to the denominator).
pub fn max_rel_err(got: &[f32], want: &[f32], floor: f32) -> f32 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / (w.abs() + floor))
        .fold(
            if got.len() == want.len() {
                0.0
            } else {
                f32::INFINITY
            },
            f32::max,
        )
}

/// How many bf16 values differ by more than one bf16 step, and the largest relative difference.
pub fn bf16_mismatch(got: &[u16], want: &[u16]) -> (usize, f32) {
    let mut bad = if got.len() == want.len() {
        0
    } else {
        usize::MAX
    };
    let mut worst = 0.0f32;
    for (&g, &w) in got.iter().zip(want) {
        let (gv, wv) = (llm_ref::bf16_value(g), llm_ref::bf16_value(w));
        let step = gv.abs().max(wv.abs()) / 128.0;
        let diff = (gv - wv).abs();
        if diff > step + 1e-30 {
            bad += 1;
        }
        worst = worst.max(diff / (wv.abs() + 1e-6));
    }
    (bad, worst)
}

fn bf16_check(name: &str, got: &[u16], want: &[u16]) -> Check {
    let (bad, worst) = bf16_mismatch(got, want);
    Check {
        name: name.into(),
        passed: bad == 0,
        detail: format!(
            "{} values, {bad} beyond one bf16 step, max rel diff {worst:.2e}",
            want.len()
        ),
    }
}

fn f32_check(name: &str, got: &[f32], want: &[f32]) -> Check {
    let within = |g: &f32, w: &f32| (g - w).abs() <= 1e-5 * w.abs() + 1e-6;
    Check {
        name: name.into(),
        passed: got.len() == want.len() && got.iter().zip(want).all(|(g, w)| within(g, w)),
        detail: format!(
            "{} values, max rel err {:.2e}",
            want.len(),
            max_rel_err(got, want, 1e-3)
        ),
    }
}

/// Run every kernel check; `Err` only when the device itself fails.
pub fn run_all(gpu: &Arc<Gpu>) -> Result<Vec<Check>, CudaError> {
    let k = gpu.load(&LLM_SOURCE)?;
    println!(
        "kernel registers/spilled bytes/static shared bytes: {}",
        k.resources().join(", ")
    );
    let mut out = vec![embed(gpu, &k)?, rms_norm(gpu, &k)?];
    for (neox, bias) in [(true, true), (false, false)] {
        out.extend(qkv_rope(gpu, &k, neox, bias)?);
    }
    out.push(attention(gpu, &k)?);
    out.push(silu_mul(gpu, &k)?);
    out.extend(sampling(gpu, &k)?);
    out.push(fbank(gpu)?);
    Ok(out)
}

fn embed(g: &Gpu, k: &Kernels) -> Result<Check, CudaError> {
    let (vocab, hidden) = (1000, 576);
    let mut rng = Rng::new(1);
    let table = crate::cuda::to_bf16_bits(&rng.vec(vocab * hidden, 1.0));
    let ids: Vec<u32> = (0..37).map(|_| rng.below(vocab) as u32).collect();
    let d_table = g.upload(&table)?;
    let d_ids = g.upload(&ids)?;
    let d_x = g.zeros::<f32>(ids.len() * hidden)?;
    g.launch(
        k.get("embed_rows")?,
        (ids.len() as u32, 1, 1),
        256,
        &[
            &g.ptr(&d_table),
            &g.ptr(&d_ids),
            &g.ptr(&d_x),
            &(hidden as i32),
        ],
    )?;
    let got = g.download(&d_x, ids.len() * hidden)?;
    Ok(f32_check(
        "embed_rows",
        &got,
        &llm_ref::embed_rows(&table, &ids, hidden),
    ))
}

fn rms_norm(g: &Gpu, k: &Kernels) -> Result<Check, CudaError> {
    let (n, hidden) = (17, 896);
    let mut rng = Rng::new(2);
    let x = rng.vec(n * hidden, 3.0);
    let w = rng.vec(hidden, 1.5);
    let rows: Vec<i32> = vec![16, 0, 5, 5];
    let d_x = g.upload(&x)?;
    let d_w = g.upload(&w)?;
    let d_rows = g.upload(&rows)?;
    let d_out = g.zeros::<u16>(rows.len() * hidden)?;
    g.launch(
        k.get("rms_norm_bf16")?,
        (rows.len() as u32, 1, 1),
        256,
        &[
            &g.ptr(&d_x),
            &g.ptr(&d_w),
            &g.ptr(&d_rows),
            &g.ptr(&d_out),
            &(hidden as i32),
            &1e-6f32,
        ],
    )?;
    let got = g.download(&d_out, rows.len() * hidden)?;
    let want = llm_ref::rms_norm_bf16(&x, &w, Some(&rows), hidden, 1e-6);
    Ok(bf16_check("rms_norm_bf16 (row subset)", &got, &want))
}

fn qkv_rope(g: &Gpu, k: &Kernels, neox: bool, with_bias: bool) -> Result<Vec<Check>, CudaError> {
    let shape = HeadShape {
        n_heads: 14,
        n_kv: 2,
        head_dim: 64,
    };
    let n = 9;
    let slots = 64;
    let mut rng = Rng::new(3 + neox as u64);
    let mut qkv = rng.vec(n * shape.qkv_width(), 2.0);
    let bias = rng.vec(shape.qkv_width(), 0.5);
    let row_pos: Vec<i32> = (0..n).map(|_| rng.below(500) as i32).collect();
    let row_slot: Vec<i32> = (0..n as i32).map(|i| (i * 7) % slots as i32).collect();
    let (cos, sin) = llm_ref::rope_tables(shape.head_dim, 1_000_000.0, 512);
    let d_qkv = g.upload(&qkv)?;
    let d_bias = g.upload(&bias)?;
    let d_pos = g.upload(&row_pos)?;
    let d_slot = g.upload(&row_slot)?;
    let d_cos = g.upload(&cos)?;
    let d_sin = g.upload(&sin)?;
    let cache = slots * shape.kv_width();
    let d_k = g.zeros::<u16>(cache)?;
    let d_v = g.zeros::<u16>(cache)?;
    let bias_ptr = if with_bias { g.ptr(&d_bias) } else { 0u64 };
    g.launch(
        k.get("qkv_rope_append")?,
        (n as u32, 1, 1),
        128,
        &[
            &g.ptr(&d_qkv),
            &bias_ptr,
            &g.ptr(&d_pos),
            &g.ptr(&d_slot),
            &g.ptr(&d_cos),
            &g.ptr(&d_sin),
            &g.ptr(&d_k),
            &g.ptr(&d_v),
            &(shape.n_heads as i32),
            &(shape.n_kv as i32),
            &(shape.head_dim as i32),
            &(neox as i32),
        ],
    )?;
    let got_qkv = g.download(&d_qkv, qkv.len())?;
    let got_k = g.download(&d_k, cache)?;
    let got_v = g.download(&d_v, cache)?;
    let (mut want_k, mut want_v) = (vec![0u16; cache], vec![0u16; cache]);
    llm_ref::qkv_rope_append(
        &mut qkv,
        with_bias.then_some(&bias[..]),
        &row_pos,
        &row_slot,
        &cos,
        &sin,
        &mut want_k,
        &mut want_v,
        shape,
        neox,
    );
    let q_of = |v: &[f32]| -> Vec<f32> {
        v.chunks_exact(shape.qkv_width())
            .flat_map(|r| r[..shape.q_width()].to_vec())
            .collect()
    };
    let tag = format!(
        "{}{}",
        if neox { "neox" } else { "interleaved" },
        if with_bias { "+bias" } else { "" }
    );
    Ok(vec![
        f32_check(
            &format!("qkv_rope_append q ({tag})"),
            &q_of(&got_qkv),
            &q_of(&qkv),
        ),
        bf16_check(&format!("qkv_rope_append k ({tag})"), &got_k, &want_k),
        bf16_check(&format!("qkv_rope_append v ({tag})"), &got_v, &want_v),
    ])
}

fn attention(g: &Gpu, k: &Kernels) -> Result<Check, CudaError> {
    let shape = HeadShape {
        n_heads: 14,
        n_kv: 2,
        head_dim: 64,
    };
    let page_size = 16;
    let pages = 200;
    let mut rng = Rng::new(5);
    // Three sequences: two decoding at long positions, one prefilling a 7-token chunk.
    let lens = [700usize, 33, 12];
    let mut page_table = Vec::new();
    let mut seq_pages = Vec::new();
    let mut free: Vec<i32> = (0..pages as i32).collect();
    // Scatter the pages so the page table really is followed.
    for i in (1..free.len()).rev() {
        free.swap(i, rng.below(i + 1));
    }
    for &len in &lens {
        seq_pages.push(page_table.len() as i32);
        for _ in 0..len.div_ceil(page_size) {
            page_table.push(free.pop().unwrap_or(0));
        }
    }
    let (mut row_pos, mut row_seq) = (Vec::new(), Vec::new());
    for (s, pos) in [(0, 699), (1, 32)] {
        row_pos.push(pos);
        row_seq.push(s);
    }
    for p in 5..12 {
        row_pos.push(p);
        row_seq.push(2);
    }
    let n = row_pos.len();
    let qkv = rng.vec(n * shape.qkv_width(), 1.0);
    let cache = pages * page_size * shape.kv_width();
    let kc = crate::cuda::to_bf16_bits(&rng.vec(cache, 1.0));
    let vc = crate::cuda::to_bf16_bits(&rng.vec(cache, 1.0));
    let scale = 1.0 / (shape.head_dim as f32).sqrt();
    let d = (
        g.upload(&qkv)?,
        g.upload(&kc)?,
        g.upload(&vc)?,
        g.upload(&row_pos)?,
        g.upload(&row_seq)?,
        g.upload(&seq_pages)?,
        g.upload(&page_table)?,
    );
    let d_out = g.zeros::<u16>(n * shape.q_width())?;
    let max_keys = *row_pos.iter().max().unwrap_or(&0) as usize + 1;
    let (splits, _) = super::attention::plan(n, shape.n_kv, max_keys);
    let d_partial = g.zeros::<f32>(super::attention::partial_len(n, shape, splits))?;
    let args = super::attention::AttentionArgs {
        qkv: g.ptr(&d.0),
        k_cache: g.ptr(&d.1),
        v_cache: g.ptr(&d.2),
        row_pos: g.ptr(&d.3),
        row_seq: g.ptr(&d.4),
        seq_pages: g.ptr(&d.5),
        page_table: g.ptr(&d.6),
        out: g.ptr(&d_out),
        rows: n,
        max_keys,
        shape,
        page_size,
        scale,
    };
    super::attention::launch(g, k, &args, g.ptr(&d_partial))?;
    let got = g.download(&d_out, n * shape.q_width())?;
    let rows = PagedRows {
        row_pos: &row_pos,
        row_seq: &row_seq,
        seq_pages: &seq_pages,
        page_table: &page_table,
        page_size,
    };
    let want = llm_ref::attention_rows(&qkv, &kc, &vc, rows, shape, scale);
    Ok(bf16_check(
        "attention split+merge (paged, GQA 7, decode+prefill)",
        &got,
        &want,
    ))
}

fn silu_mul(g: &Gpu, k: &Kernels) -> Result<Check, CudaError> {
    let (n, ffn) = (5, 4864);
    let mut rng = Rng::new(6);
    let gu = rng.vec(n * 2 * ffn, 6.0);
    let d_gu = g.upload(&gu)?;
    let d_out = g.zeros::<u16>(n * ffn)?;
    g.launch(
        k.get("silu_mul_bf16")?,
        (n as u32, 1, 1),
        256,
        &[&g.ptr(&d_gu), &g.ptr(&d_out), &(ffn as i32)],
    )?;
    let got = g.download(&d_out, n * ffn)?;
    Ok(bf16_check(
        "silu_mul_bf16",
        &got,
        &llm_ref::silu_mul_bf16(&gu, ffn),
    ))
}

fn sampling(g: &Gpu, k: &Kernels) -> Result<Vec<Check>, CudaError> {
    let vocab = 151_936;
    let rows = 64;
    let mut rng = Rng::new(7);
    let mut logits = rng.vec(rows * vocab, 8.0);
    let mut specs = Vec::new();
    let mut recent = Vec::new();
    let mut recent_off = vec![0i32];
    for r in 0..rows {
        let greedy = r % 2 == 0;
        specs.push(SampleSpec {
            temperature: if greedy { 0.0 } else { 0.5 + rng.unit().abs() },
            top_p: if r % 4 == 1 {
                1.0
            } else {
                0.5 + 0.45 * rng.unit().abs()
            },
            penalty: if r % 3 == 0 { 1.0 } else { 1.3 },
            uniform: (rng.unit() + 1.0) / 2.0,
        });
        // Make each row's favourite token a recent one so the penalty matters.
        let row = &logits[r * vocab..(r + 1) * vocab];
        let best = llm_ref::sample_row(
            &mut row.to_vec(),
            SampleSpec {
                temperature: 0.0,
                top_p: 1.0,
                penalty: 1.0,
                uniform: 0.0,
            },
            &[],
        );
        for _ in 0..3 {
            recent.push(best as i32);
        }
        recent.push(rng.below(vocab) as i32);
        recent_off.push(recent.len() as i32);
    }
    // A peaked row or two, like a real model's.
    for r in [1usize, 3] {
        logits[r * vocab + 4242] += 40.0;
    }
    let col = |f: fn(&SampleSpec) -> f32| specs.iter().map(f).collect::<Vec<f32>>();
    let d_logits = g.upload(&logits)?;
    let d_t = g.upload(&col(|s| s.temperature))?;
    let d_p = g.upload(&col(|s| s.top_p))?;
    let d_pen = g.upload(&col(|s| s.penalty))?;
    let d_u = g.upload(&col(|s| s.uniform))?;
    let d_recent = g.upload(&recent)?;
    let d_off = g.upload(&recent_off)?;
    let d_out = g.zeros::<u32>(rows)?;
    g.launch(
        k.get("sample_rows")?,
        (rows as u32, 1, 1),
        llm_ref::SAMPLE_THREADS as u32,
        &[
            &g.ptr(&d_logits),
            &(vocab as i32),
            &g.ptr(&d_t),
            &g.ptr(&d_p),
            &g.ptr(&d_pen),
            &g.ptr(&d_u),
            &g.ptr(&d_recent),
            &g.ptr(&d_off),
            &g.ptr(&d_out),
        ],
    )?;
    let got = g.download(&d_out, rows)?;
    let (mut greedy_same, mut greedy_n, mut sampled_same, mut sampled_n) = (0, 0, 0, 0);
    for r in 0..rows {
        let rec: Vec<u32> = recent[recent_off[r] as usize..recent_off[r + 1] as usize]
            .iter()
            .map(|&t| t as u32)
            .collect();
        let want = llm_ref::sample_row(&mut logits[r * vocab..(r + 1) * vocab], specs[r], &rec);
        if specs[r].temperature > 0.0 {
            sampled_n += 1;
            sampled_same += (got[r] == want) as usize;
        } else {
            greedy_n += 1;
            greedy_same += (got[r] == want) as usize;
        }
    }
    Ok(vec![
        Check {
            name: "sample_rows greedy + penalty".into(),
            passed: greedy_same == greedy_n,
            detail: format!("{greedy_same}/{greedy_n} rows equal to the twin"),
        },
        Check {
            name: "sample_rows temperature/top-p".into(),
            // expf differs from Rust's exp in the last bit, which can move a draw that lands
            // exactly on a boundary to the neighbouring token; anything more is a bug.
            passed: sampled_same + 1 >= sampled_n,
            detail: format!("{sampled_same}/{sampled_n} rows equal to the twin (same draw)"),
        },
    ])
}

fn fbank(g: &Arc<Gpu>) -> Result<Check, CudaError> {
    let gpu_fb = GpuFbank::new(g.clone(), FbankConfig::default())?;
    let mut cpu_fb =
        Fbank::new(FbankConfig::default()).map_err(|e| CudaError::Invalid(e.to_string()))?;
    // Eight "sessions" of speech-like audio of different lengths: tones with vibrato, noise,
    // and silence gaps (the energy floor), as one tick of a server would hold.
    let mut rng = Rng::new(8);
    let sessions: Vec<Vec<f32>> = (0..8)
        .map(|s| {
            let len = 1600 + 977 * s;
            (0..len)
                .map(|i| {
                    let t = i as f32 / 16_000.0;
                    let f0 = 120.0 + 40.0 * s as f32 + 10.0 * (6.0 * t).sin();
                    let voiced = (1..6)
                        .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                        .sum::<f32>();
                    let gap = (i / 800) % 5 == 4 && s % 2 == 1;
                    if gap {
                        0.0
                    } else {
                        0.3 * voiced + 0.02 * rng.unit()
                    }
                })
                .collect()
        })
        .collect();
    let refs: Vec<&[f32]> = sessions.iter().map(|s| s.as_slice()).collect();
    let got = gpu_fb.compute_batch(&refs)?;
    let (mut worst, mut n) = (0.0f32, 0usize);
    let mut shapes_ok = true;
    for (s, g_feats) in sessions.iter().zip(&got) {
        let want = cpu_fb.compute(s);
        shapes_ok &= want.len() == g_feats.len();
        for (a, b) in g_feats.iter().zip(&want) {
            worst = worst.max((a - b).abs());
            n += 1;
        }
    }
    // Log-energies: 1e-3 absolute is 0.1 % relative energy. The CPU reference is an f32 FFT and
    // the GPU a double-precision DFT, so the difference is the CPU's rounding.
    Ok(Check {
        name: "fbank_frames (8 sessions, 1 launch)".into(),
        passed: shapes_ok && worst <= 1e-3,
        detail: format!("{n} log-mel values, max abs diff {worst:.2e}"),
    })
}
