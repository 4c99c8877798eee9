//! An 8-bit weight x 8-bit activation matmul that reuses every weight load across up to 8
//! activation rows, with AVX-512 VNNI (`vpdpbusd`).
//!
//! Why: candle 0.11's CPU quantized matmul computes every output element with its own AVX2
//! dot product (32 multiply-adds per ~8 instructions), so a 27-token prefill or a batch-8
//! decode step costs ~m times one row, and re-quantizing the activations is scalar code
//! (11 % of a new-turn profile). Here one `vpdpbusd` does 64 multiply-adds: four activation
//! bytes (broadcast) against four weight bytes of 16 output columns, so a 32-wide block of one
//! row against 16 columns is 8 instructions plus 4 for the per-block scales.
//!
//! Layout (built once at load from any weight tensor via Q8_0-style quantization):
//! columns in groups of 16; for each group and each 32-wide block of `k`, 8 x 64 bytes where
//! bytes `[64 s + 4 c .. 64 s + 4 c + 4]` are column `c`'s weights `4 s .. 4 s + 4` of the block
//! plus 128 (unsigned, as `vpdpbusd` wants), then 16 f32 block scales per group and block.
//! Activations are quantized per row and 32-block to i8 with an f32 scale; the +128 on the
//! weights is undone by adding `-128 * sum(activation block)` (exact integer arithmetic).
//!
//! Every output element is the same sequence of float operations whichever way rows are
//! batched or columns are split over threads, so batched and single-sequence decoding stay
//! bit-identical; the portable reference [`PackedQ8::matmul_reference`] performs the same
//! operations and the SIMD path is tested to equal it bit for bit.

use candle_core::quantized::QTensor;
use candle_core::{Device, Result as CResult, Storage, Tensor};

use super::parallel::{chunk_len, for_each_chunk_mut};

/// Output columns per packed group (one 512-bit register of i32/f32 lanes).
const GROUP: usize = 16;
/// Weights and activations are quantized in blocks of this many along `k`.
const BLOCK: usize = 32;
/// Bytes of packed quants per group and block.
const GROUP_BLOCK_BYTES: usize = GROUP * BLOCK;
/// Most activation rows one register tile handles per weight load.
const MAX_ROWS: usize = 8;

/// Whether this CPU runs the kernel (AVX-512 F/BW and VNNI).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight matrix `[n, k]` (row-major, `y = x W^T`) packed for the kernel.
pub struct PackedQ8 {
    n: usize,
    k: usize,
    blocks: usize,
    groups: usize,
    /// `[groups][blocks][8][16][4]` weight bytes + 128.
    quants: Vec<u8>,
    /// `[groups][blocks][16]` per-block scales.
    scales: Vec<f32>,
}

/// Activation rows quantized per 32-block.
struct QuantRows {
    k: usize,
    blocks: usize,
    q: Vec<i8>,
    /// `[rows][blocks]` scales.
    d: Vec<f32>,
    /// `[rows][blocks]` `-128 * sum(q of the block)`: cancels the +128 on the weights.
    comp: Vec<i32>,
}

/// Quantize one 32-block to i8 with scale `max|x| / 127` (round half to even).
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        // Float-to-int `as` saturates; |v * id| <= 127 (+ rounding) for finite input.
        *q = (v * id).round_ties_even() as i8;
        sum += *q as i32;
    }
    (d, sum)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{BLOCK, GROUP, GROUP_BLOCK_BYTES, PackedQ8, QuantRows};
    use std::arch::x86_64::*;

    /// Same result as [`super::quantize_block`], 16 lanes at a time. `_mm512_cvtps_epi32`
    /// rounds half to even under the default MXCSR rounding mode, which Rust never changes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
        // SAFETY: `x` is 32 f32s, so both 16-lane loads read inside it.
        let (a, b) = unsafe {
            (
                _mm512_loadu_ps(x.as_ptr()),
                _mm512_loadu_ps(x.as_ptr().add(16)),
            )
        };
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let vid = _mm512_set1_ps(id);
        let ia = _mm512_cvtps_epi32(_mm512_mul_ps(a, vid));
        let ib = _mm512_cvtps_epi32(_mm512_mul_ps(b, vid));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(ia, ib));
        // SAFETY: `q` is 32 bytes: the two 16-byte stores write its halves.
        unsafe {
            _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtsepi32_epi8(ia));
            _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtsepi32_epi8(ib));
        }
        (d, sum)
    }

    /// Rows `r0 .. r0 + R` of `a` times column group `g` of `w`: 16 outputs per row.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn tile<const R: usize>(
        w: &PackedQ8,
        g: usize,
        a: &QuantRows,
        r0: usize,
        out: &mut [[f32; GROUP]; R],
    ) {
        let kb = w.blocks;
        let wq = &w.quants[g * kb * GROUP_BLOCK_BYTES..(g + 1) * kb * GROUP_BLOCK_BYTES];
        let ws = &w.scales[g * kb * GROUP..(g + 1) * kb * GROUP];
        let rows: [&[i8]; R] = std::array::from_fn(|r| &a.q[(r0 + r) * a.k..(r0 + r + 1) * a.k]);
        let mut acc = [_mm512_setzero_ps(); R];
        for b in 0..kb {
            let wb: &[u8; GROUP_BLOCK_BYTES] = wq[b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES]
                .try_into()
                .unwrap_or_else(|_| unreachable!("slice has GROUP_BLOCK_BYTES"));
            let sb: &[f32; GROUP] = ws[b * GROUP..][..GROUP]
                .try_into()
                .unwrap_or_else(|_| unreachable!("slice has GROUP"));
            // SAFETY: `wb` is 512 bytes: 8 loads of 64 bytes at offsets 0, 64, .., 448.
            let wv: [__m512i; 8] = std::array::from_fn(|s| unsafe {
                _mm512_loadu_si512(wb.as_ptr().add(64 * s).cast())
            });
            // SAFETY: `sb` is 16 f32s.
            let dw = unsafe { _mm512_loadu_ps(sb.as_ptr()) };
            for r in 0..R {
                let x = &rows[r][b * BLOCK..(b + 1) * BLOCK];
                let mut s = _mm512_set1_epi32(a.comp[(r0 + r) * a.blocks + b]);
                for (j, w4) in wv.iter().enumerate() {
                    let x4 = i32::from_le_bytes([
                        x[4 * j] as u8,
                        x[4 * j + 1] as u8,
                        x[4 * j + 2] as u8,
                        x[4 * j + 3] as u8,
                    ]);
                    s = _mm512_dpbusd_epi32(s, *w4, _mm512_set1_epi32(x4));
                }
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[(r0 + r) * a.blocks + b]));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[r]);
            }
        }
        for r in 0..R {
            // SAFETY: `out[r]` is 16 f32s.
            unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]) };
        }
    }
}

impl QuantRows {
    fn new(x: &[f32], m: usize, k: usize, simd: bool) -> Self {
        let blocks = k / BLOCK;
        let mut q = vec![0i8; m * k];
        let mut d = vec![0f32; m * blocks];
        let mut comp = vec![0i32; m * blocks];
        for (i, (xb, qb)) in x
            .chunks_exact(BLOCK)
            .zip(q.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let (di, sum) = quantize_one(xb, qb, simd);
            d[i] = di;
            comp[i] = -128 * sum;
        }
        Self {
            k,
            blocks,
            q,
            d,
            comp,
        }
    }
}

fn quantize_one(x: &[f32], q: &mut [i8], simd: bool) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if simd
        && let (Ok(xa), Ok(qa)) = (
            <&[f32; BLOCK]>::try_from(x),
            <&mut [i8; BLOCK]>::try_from(&mut *q),
        )
    {
        // SAFETY: `simd` is only true when `available()` found AVX-512 F and BW.
        return unsafe { simd::quantize_block(xa, qa) };
    }
    let _ = simd;
    quantize_block(x, q)
}

impl PackedQ8 {
    /// Pack a row-major f32 matrix `[n, k]`; `k` must be a multiple of 32.
    pub fn from_f32(w: &[f32], n: usize, k: usize) -> CResult<Self> {
        if k == 0 || !k.is_multiple_of(BLOCK) || w.len() != n * k {
            candle_core::bail!("q8gemm: weight [{n}, {k}] with {} values", w.len());
        }
        let blocks = k / BLOCK;
        let groups = n.div_ceil(GROUP);
        let mut quants = vec![128u8; groups * blocks * GROUP_BLOCK_BYTES];
        let mut scales = vec![0f32; groups * blocks * GROUP];
        let mut qb = [0i8; BLOCK];
        for col in 0..n {
            let (g, c) = (col / GROUP, col % GROUP);
            for b in 0..blocks {
                let (d, _) = quantize_block(&w[col * k + b * BLOCK..][..BLOCK], &mut qb);
                scales[(g * blocks + b) * GROUP + c] = d;
                let base = (g * blocks + b) * GROUP_BLOCK_BYTES;
                for (i, &v) in qb.iter().enumerate() {
                    let (s, t) = (i / 4, i % 4);
                    quants[base + 64 * s + 4 * c + t] = (v as i16 + 128) as u8;
                }
            }
        }
        Ok(Self {
            n,
            k,
            blocks,
            groups,
            quants,
            scales,
        })
    }

    /// Pack a quantized weight of any type (dequantized, then re-quantized per 32-block; a
    /// Q8_0 tensor keeps its exact values since its blocks already span +-127).
    pub fn from_qtensor(t: &QTensor) -> CResult<Self> {
        let (n, k) = t.shape().dims2()?;
        let w = t
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::from_f32(&w, n, k)
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.quants.len() + self.scales.len() * 4
    }

    /// `x [m, k]` times the weight: `[m, n]`, row-major. Requires [`available`]; uses candle's
    /// CPU thread pool (`CANDLE_NUM_THREADS`).
    pub fn matmul(&self, x: &[f32], m: usize) -> CResult<Vec<f32>> {
        self.check(x, m)?;
        if !available() {
            candle_core::bail!("q8gemm: this CPU lacks AVX-512 VNNI");
        }
        let a = QuantRows::new(x, m, self.k, true);
        // Work items are ranges of column groups; each owns the contiguous slice
        // `[groups][m][16]` of a group-major buffer, so workers write disjoint memory.
        let per_item = chunk_len(self.groups);
        let mut by_group = vec![0f32; self.groups * m * GROUP];
        for_each_chunk_mut(&mut by_group, per_item * m * GROUP, |i, out| {
            for (gi, out_g) in out.chunks_mut(m * GROUP).enumerate() {
                self.group_simd(i * per_item + gi, &a, out_g);
            }
        });
        Ok(self.ungroup(&by_group, m))
    }

    /// One column group, all rows, in tiles of up to 8 rows.
    fn group_simd(&self, g: usize, a: &QuantRows, out: &mut [f32]) {
        let m = out.len() / GROUP;
        let mut r0 = 0;
        while r0 < m {
            let rows = (m - r0).min(MAX_ROWS);
            let dst = &mut out[r0 * GROUP..(r0 + rows) * GROUP];
            match rows {
                8 => self.tile_into::<8>(g, a, r0, dst),
                7 => self.tile_into::<7>(g, a, r0, dst),
                6 => self.tile_into::<6>(g, a, r0, dst),
                5 => self.tile_into::<5>(g, a, r0, dst),
                4 => self.tile_into::<4>(g, a, r0, dst),
                3 => self.tile_into::<3>(g, a, r0, dst),
                2 => self.tile_into::<2>(g, a, r0, dst),
                _ => self.tile_into::<1>(g, a, r0, dst),
            }
            r0 += rows;
        }
    }

    fn tile_into<const R: usize>(&self, g: usize, a: &QuantRows, r0: usize, dst: &mut [f32]) {
        let mut out = [[0f32; GROUP]; R];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only reached from `matmul`, which returns early unless `available()` found
        // AVX-512 F, BW and VNNI, the features `simd::tile` is compiled for.
        unsafe {
            simd::tile::<R>(self, g, a, r0, &mut out)
        };
        for (d, o) in dst.chunks_exact_mut(GROUP).zip(&out) {
            d.copy_from_slice(o);
        }
    }

    /// Group-major `[groups][m][16]` to row-major `[m, n]` (drops padding columns).
    fn ungroup(&self, by_group: &[f32], m: usize) -> Vec<f32> {
        if m == 1 {
            return by_group[..self.n].to_vec();
        }
        let mut y = vec![0f32; m * self.n];
        for (g, chunk) in by_group.chunks_exact(m * GROUP).enumerate() {
            let cols = GROUP.min(self.n - g * GROUP);
            for (r, src) in chunk.chunks_exact(GROUP).enumerate() {
                y[r * self.n + g * GROUP..][..cols].copy_from_slice(&src[..cols]);
            }
        }
        y
    }

    fn check(&self, x: &[f32], m: usize) -> CResult<()> {
        if x.len() != m * self.k {
            candle_core::bail!(
                "q8gemm: input has {} values, expected {m} x {}",
                x.len(),
                self.k
            );
        }
        Ok(())
    }

    /// The same arithmetic as [`Self::matmul`] in plain scalar code, one thread: the
    /// reference the SIMD kernel must equal bit for bit.
    pub fn matmul_reference(&self, x: &[f32], m: usize) -> CResult<Vec<f32>> {
        self.check(x, m)?;
        let a = QuantRows::new(x, m, self.k, false);
        let mut y = vec![0f32; m * self.n];
        for r in 0..m {
            for col in 0..self.n {
                let (g, c) = (col / GROUP, col % GROUP);
                let mut acc = 0f32;
                for b in 0..self.blocks {
                    let base = (g * self.blocks + b) * GROUP_BLOCK_BYTES;
                    let mut s = a.comp[r * self.blocks + b];
                    for i in 0..BLOCK {
                        let wv = self.quants[base + 64 * (i / 4) + 4 * c + i % 4] as i32;
                        s += wv * a.q[r * self.k + b * BLOCK + i] as i32;
                    }
                    let scale =
                        self.scales[(g * self.blocks + b) * GROUP + c] * a.d[r * self.blocks + b];
                    acc = (s as f32).mul_add(scale, acc);
                }
                y[r * self.n + col] = acc;
            }
        }
        Ok(y)
    }

    /// `x [m, k]` (f32, CPU) times the weight as a tensor `[m, n]`.
    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (m, k) = x.dims2()?;
        if k != self.k {
            candle_core::bail!("q8gemm: input width {k}, weight width {}", self.k);
        }
        let x = x.contiguous()?;
        let y = {
            let (storage, layout) = x.storage_and_layout();
            let Storage::Cpu(cpu) = &*storage else {
                candle_core::bail!("q8gemm: CPU tensors only");
            };
            let all = cpu.as_slice::<f32>()?;
            let start = layout.start_offset();
            let xs = all
                .get(start..start + m * k)
                .ok_or_else(|| candle_core::Error::Msg("q8gemm: short storage".into()))?;
            self.matmul(xs, m)?
        };
        Tensor::from_vec(y, (m, self.n), &Device::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Module;
    use candle_core::quantized::{GgmlDType, QMatMul};

    /// Deterministic values with a spread of magnitudes per block (some near zero, some large).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
                u * (1.0 + (i % 7) as f32)
            })
            .collect()
    }

    #[test]
    fn simd_equals_reference_bit_for_bit_for_every_row_count() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU (the model uses candle's matmul)");
            return;
        }
        // n = 40: two full groups and a padded one; k = 96: three blocks.
        let (n, k) = (40, 96);
        let w = PackedQ8::from_f32(&values(n * k, 1), n, k).expect("pack");
        for m in [1, 2, 3, 7, 8, 9, 17, 27] {
            let x = values(m * k, 100 + m as u64);
            let fast = w.matmul(&x, m).expect("simd");
            let slow = w.matmul_reference(&x, m).expect("reference");
            assert_eq!(fast.len(), m * n);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "m {m} element {i}: {a} vs {b}");
            }
            // Batching must not change a row: row r alone equals row r of the batch.
            let last = w.matmul(&x[(m - 1) * k..], 1).expect("one row");
            assert_eq!(last, fast[(m - 1) * n..].to_vec(), "m {m}");
        }
    }

    #[test]
    fn matches_candle_q8_0_matmul_to_rounding() {
        let (n, k, m) = (64, 256, 5);
        let wf = values(n * k, 7);
        let wt = Tensor::from_vec(wf, (n, k), &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&wt, GgmlDType::Q8_0).expect("quantize");
        let packed = PackedQ8::from_qtensor(&q).expect("pack");
        let wd = q
            .dequantize(&Device::Cpu)
            .expect("deq")
            .to_vec2::<f32>()
            .expect("vec");
        let x = values(m * k, 9);
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).expect("tensor");
        let want = QMatMul::from_qtensor(q)
            .expect("qmatmul")
            .forward(&xt)
            .expect("candle")
            .flatten_all()
            .expect("flat")
            .to_vec1::<f32>()
            .expect("vec");
        let got = packed.matmul_reference(&x, m).expect("reference");
        // Exact f32 product with the same (dequantized) weights: both 8-bit paths must be close
        // to it, ours (f32 activation scales) no worse than candle's (f16 scales).
        let exact: Vec<f32> = (0..m)
            .flat_map(|r| {
                let x = &x;
                wd.iter().map(move |row| {
                    row.iter()
                        .zip(&x[r * k..(r + 1) * k])
                        .map(|(a, b)| a * b)
                        .sum()
                })
            })
            .collect();
        let max_err = |ys: &[f32]| {
            ys.iter()
                .zip(&exact)
                .fold(0f32, |e, (y, t)| e.max((y - t).abs()))
        };
        let spread = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
        let (ours, theirs) = (max_err(&got), max_err(&want));
        eprintln!("max error vs f32: ours {ours}, candle {theirs}, spread {spread}");
        assert!(ours <= 1e-2 * spread, "ours {ours} vs spread {spread}");
        assert!(ours <= 1.5 * theirs, "ours {ours} vs candle {theirs}");
        if available() {
            let fast = packed.matmul(&x, m).expect("simd");
            assert_eq!(fast, got);
        }
    }

    #[test]
    fn rejects_bad_shapes_with_errors() {
        assert!(PackedQ8::from_f32(&[0.0; 10], 2, 5).is_err());
        let w = PackedQ8::from_f32(&values(16 * 32, 3), 16, 32).expect("pack");
        assert!(w.matmul_reference(&[0.0; 31], 1).is_err());
        let bad = Tensor::zeros((2, 64), candle_core::DType::F32, &Device::Cpu).expect("zeros");
        assert!(w.forward(&bad).is_err());
    }
}
