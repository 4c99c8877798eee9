//! CPU twins of the LLM kernels in `kernels/cuda/llm.cu`: the same arithmetic, in plain Rust,
//! one function per kernel. They are the reference the GPU kernels are tested against, and they
//! document each kernel's contract (layouts, rounding, tie rules).
//!
//! bf16 values are carried as their 16-bit patterns (`u16`), rounded to nearest even.

/// Threads per block of `sample_rows`; the twin splits the vocabulary into as many chunks.
pub const SAMPLE_THREADS: usize = 1024;

pub fn bf16_bits(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `x` rounded to bf16 and back.
pub fn bf16_round(x: f32) -> f32 {
    bf16_value(bf16_bits(x))
}

/// RoPE tables `[max_pos, head_dim / 2]` (cos, sin), as the CPU model builds them.
pub fn rope_tables(head_dim: usize, base: f32, max_pos: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(max_pos * half);
    let mut sin = Vec::with_capacity(max_pos * half);
    for p in 0..max_pos {
        for f in &inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

/// `embed_rows`: row r of the output is row `ids[r]` of the bf16 table.
pub fn embed_rows(table: &[u16], ids: &[u32], hidden: usize) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| {
            table[id as usize * hidden..(id as usize + 1) * hidden]
                .iter()
                .map(|&b| bf16_value(b))
        })
        .collect()
}

/// `rms_norm_bf16`: rows `rows` (or all) of `x`, RMS-normalised, scaled by `w`, as bf16.
pub fn rms_norm_bf16(
    x: &[f32],
    w: &[f32],
    rows: Option<&[i32]>,
    hidden: usize,
    eps: f32,
) -> Vec<u16> {
    let all: Vec<i32> = (0..(x.len() / hidden) as i32).collect();
    let rows = rows.unwrap_or(&all);
    let mut out = Vec::with_capacity(rows.len() * hidden);
    for &r in rows {
        let xr = &x[r as usize * hidden..(r as usize + 1) * hidden];
        let s: f32 = xr.iter().map(|v| v * v).sum();
        let inv = 1.0 / (s / hidden as f32 + eps).sqrt();
        out.extend(xr.iter().zip(w).map(|(v, w)| bf16_bits(v * inv * w)));
    }
    out
}

/// Shapes of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct HeadShape {
    pub n_heads: usize,
    pub n_kv: usize,
    pub head_dim: usize,
}

impl HeadShape {
    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_width(&self) -> usize {
        self.n_kv * self.head_dim
    }
    /// Width of one fused `[q | k | v]` row.
    pub fn qkv_width(&self) -> usize {
        self.q_width() + 2 * self.kv_width()
    }
}

/// `qkv_rope_append`: add the bias, rotate q and k at each row's position (neox pairs
/// `(i, i + d/2)`, else `(2i, 2i + 1)`), write q back, store k and v (bf16) at `row_slot[r]`.
#[allow(clippy::too_many_arguments)]
pub fn qkv_rope_append(
    qkv: &mut [f32],
    bias: Option<&[f32]>,
    row_pos: &[i32],
    row_slot: &[i32],
    cos: &[f32],
    sin: &[f32],
    k_cache: &mut [u16],
    v_cache: &mut [u16],
    shape: HeadShape,
    neox: bool,
) {
    let (hd, half) = (shape.head_dim, shape.head_dim / 2);
    let (qd, kd, width) = (shape.q_width(), shape.kv_width(), shape.qkv_width());
    for (r, row) in qkv.chunks_exact_mut(width).enumerate() {
        let c = &cos[row_pos[r] as usize * half..][..half];
        let s = &sin[row_pos[r] as usize * half..][..half];
        let slot = row_slot[r] as usize * kd;
        for head in 0..shape.n_heads + shape.n_kv {
            let base = head * hd;
            for i in 0..half {
                let (a, b) = if neox {
                    (base + i, base + i + half)
                } else {
                    (base + 2 * i, base + 2 * i + 1)
                };
                let (mut x0, mut x1) = (row[a], row[b]);
                if let Some(bias) = bias {
                    x0 += bias[a];
                    x1 += bias[b];
                }
                let y0 = x0 * c[i] - x1 * s[i];
                let y1 = x0 * s[i] + x1 * c[i];
                if head < shape.n_heads {
                    row[a] = y0;
                    row[b] = y1;
                } else {
                    k_cache[slot + a - qd] = bf16_bits(y0);
                    k_cache[slot + b - qd] = bf16_bits(y1);
                }
            }
        }
        for i in 0..kd {
            let mut v = row[qd + kd + i];
            if let Some(bias) = bias {
                v += bias[qd + kd + i];
            }
            v_cache[slot + i] = bf16_bits(v);
        }
    }
}

/// Where a row's keys live: its position and its sequence's page list.
#[derive(Debug, Clone, Copy)]
pub struct PagedRows<'a> {
    pub row_pos: &'a [i32],
    pub row_seq: &'a [i32],
    pub seq_pages: &'a [i32],
    pub page_table: &'a [i32],
    pub page_size: usize,
}

impl PagedRows<'_> {
    /// Cache slot of key `j` of row `r`'s sequence.
    pub fn slot(&self, r: usize, j: usize) -> usize {
        let pages = &self.page_table[self.seq_pages[self.row_seq[r] as usize] as usize..];
        pages[j / self.page_size] as usize * self.page_size + j % self.page_size
    }
}

/// `attention_rows`: causal softmax attention of each row's (already rotated) q against keys
/// `0..=row_pos[r]` of its sequence; query head `h` reads KV head `h / (n_heads / n_kv)`.
/// Output `[rows, n_heads * head_dim]` as bf16.
pub fn attention_rows(
    qkv: &[f32],
    k_cache: &[u16],
    v_cache: &[u16],
    rows: PagedRows<'_>,
    shape: HeadShape,
    scale: f32,
) -> Vec<u16> {
    let (hd, kd, width) = (shape.head_dim, shape.kv_width(), shape.qkv_width());
    let groups = shape.n_heads / shape.n_kv;
    let n = qkv.len() / width;
    let mut out = Vec::with_capacity(n * shape.q_width());
    for r in 0..n {
        let keys = rows.row_pos[r] as usize + 1;
        for head in 0..shape.n_heads {
            let kv_head = head / groups;
            let q = &qkv[r * width + head * hd..][..hd];
            let scores: Vec<f32> = (0..keys)
                .map(|j| {
                    let k = &k_cache[rows.slot(r, j) * kd + kv_head * hd..][..hd];
                    q.iter()
                        .zip(k)
                        .map(|(q, &k)| q * scale * bf16_value(k))
                        .sum()
                })
                .collect();
            let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let p: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f32 = p.iter().sum();
            for d in 0..hd {
                let o: f32 = (0..keys)
                    .map(|j| p[j] * bf16_value(v_cache[rows.slot(r, j) * kd + kv_head * hd + d]))
                    .sum();
                out.push(bf16_bits(o / l));
            }
        }
    }
    out
}

/// `silu_mul_bf16`: `silu(gate) * up` of each fused `[gate | up]` row, as bf16.
pub fn silu_mul_bf16(gu: &[f32], ffn: usize) -> Vec<u16> {
    gu.chunks_exact(2 * ffn)
        .flat_map(|row| {
            let (g, u) = row.split_at(ffn);
            g.iter()
                .zip(u)
                .map(|(&a, &b)| bf16_bits(a / (1.0 + (-a).exp()) * b))
        })
        .collect()
}

/// One row's sampling settings for `sample_rows`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleSpec {
    /// `<= 0`: greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 1.0 = off.
    pub penalty: f32,
    /// The draw in `[0, 1)`.
    pub uniform: f32,
}

/// Sum of per-chunk partial sums in chunk order (the kernel's `ordered_sum`).
fn ordered_sum(parts: &[f32]) -> f32 {
    parts.iter().fold(0.0, |a, &b| a + b)
}

/// `sample_rows` for one row (`row` is overwritten, as on the device; `recent` tokens are
/// penalised once per occurrence).
pub fn sample_row(row: &mut [f32], spec: SampleSpec, recent: &[u32]) -> u32 {
    let vocab = row.len();
    let chunk = vocab.div_ceil(SAMPLE_THREADS);
    let range = |t: usize| {
        let lo = (t * chunk).min(vocab);
        lo..(lo + chunk).min(vocab)
    };
    if spec.penalty != 1.0 {
        for &t in recent {
            if let Some(l) = row.get_mut(t as usize) {
                *l = if *l > 0.0 {
                    *l / spec.penalty
                } else {
                    *l * spec.penalty
                };
            }
        }
    }
    let (mut maxv, mut argmax) = (f32::NEG_INFINITY, None);
    for (i, &x) in row.iter().enumerate() {
        if x > maxv {
            maxv = x;
            argmax = Some(i);
        }
    }
    let argmax = argmax.unwrap_or(0) as u32;
    if spec.temperature.is_nan() || spec.temperature <= 0.0 {
        return argmax;
    }
    let inv_t = 1.0 / spec.temperature;
    let mut parts = vec![0.0f32; SAMPLE_THREADS];
    for (t, part) in parts.iter_mut().enumerate() {
        for i in range(t) {
            let p = ((row[i] - maxv) * inv_t).exp();
            row[i] = p;
            *part += p;
        }
    }
    let total = ordered_sum(&parts);
    let keep = spec.top_p.clamp(0.0, 1.0) * total;
    let kept_mass = |th: f32, parts: &mut [f32], row: &[f32]| {
        for (t, part) in parts.iter_mut().enumerate() {
            *part = range(t)
                .map(|i| if row[i] >= th { row[i] } else { 0.0 })
                .sum();
        }
    };
    let (mut lo, mut hi) = (0u32, 0x3f80_0000u32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        kept_mass(f32::from_bits(mid), &mut parts, row);
        if ordered_sum(&parts) >= keep {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let th = f32::from_bits(lo);
    kept_mass(th, &mut parts, row);
    let kept = ordered_sum(&parts);
    let mut target = spec.uniform * kept;
    let mut last = None;
    for (t, &part) in parts.iter().enumerate() {
        if part <= 0.0 {
            continue;
        }
        if target >= part {
            target -= part;
            last = range(t).rev().find(|&i| row[i] >= th).or(last);
            continue;
        }
        for i in range(t) {
            if row[i] < th {
                continue;
            }
            last = Some(i);
            if target < row[i] {
                return i as u32;
            }
            target -= row[i];
        }
    }
    last.map_or(argmax, |i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_round(1.0), 1.0);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(bf16_round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(bf16_round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
    }

    #[test]
    fn greedy_picks_the_first_maximum_after_the_penalty() {
        let mut row = vec![0.0, 3.0, 1.0, 3.0];
        let spec = SampleSpec {
            temperature: 0.0,
            top_p: 1.0,
            penalty: 1.0,
            uniform: 0.5,
        };
        assert_eq!(sample_row(&mut row.clone(), spec, &[]), 1);
        let spec = SampleSpec {
            penalty: 2.0,
            ..spec
        };
        assert_eq!(sample_row(&mut row, spec, &[1]), 3);
    }

    #[test]
    fn a_tiny_nucleus_keeps_only_the_top_token() {
        let mut row: Vec<f32> = (0..5000).map(|i| (i % 97) as f32 * 0.01).collect();
        row[4321] = 50.0;
        let spec = SampleSpec {
            temperature: 1.0,
            top_p: 0.1,
            penalty: 1.0,
            uniform: 0.999,
        };
        assert_eq!(sample_row(&mut row, spec, &[]), 4321);
    }

    #[test]
    fn draws_follow_the_distribution() {
        // Two equally likely tokens far above the rest: u < 0.5 picks the first, else the second.
        let mut base = vec![-30.0f32; 3000];
        base[10] = 5.0;
        base[2500] = 5.0;
        let spec = |u| SampleSpec {
            temperature: 1.0,
            top_p: 1.0,
            penalty: 1.0,
            uniform: u,
        };
        assert_eq!(sample_row(&mut base.clone(), spec(0.25), &[]), 10);
        assert_eq!(sample_row(&mut base.clone(), spec(0.75), &[]), 2500);
    }

    #[test]
    fn attention_over_one_key_returns_its_value() {
        let shape = HeadShape {
            n_heads: 2,
            n_kv: 1,
            head_dim: 2,
        };
        let qkv = vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.25, -2.0];
        let k = vec![bf16_bits(0.5), bf16_bits(0.5)];
        let v = vec![bf16_bits(0.25), bf16_bits(-2.0)];
        let rows = PagedRows {
            row_pos: &[0],
            row_seq: &[0],
            seq_pages: &[0],
            page_table: &[0],
            page_size: 16,
        };
        let out = attention_rows(&qkv, &k, &v, rows, shape, 1.0);
        let out: Vec<f32> = out.into_iter().map(bf16_value).collect();
        assert_eq!(out, vec![0.25, -2.0, 0.25, -2.0]);
    }
}
