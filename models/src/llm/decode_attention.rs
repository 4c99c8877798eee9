//! Attention for one new token over its sequence's cache, computed straight on the cache
//! memory. In a batched decode step every sequence has its own cache length, so done with
//! tensor ops this is a dozen small ops (copies, two matmuls, softmax) per sequence per layer:
//! for SmolLM2 at batch 8, ~2,900 ops per step whose dispatch cost more than the matmuls.

use candle_core::{Result as CResult, Storage, Tensor};

/// `q`: the token's query heads, `[n_heads * head_dim]` (after RoPE). `k_all`, `v_all`: the
/// cache views `[kv_heads, len, head_dim]` including this token. Appends the output heads,
/// `[n_heads * head_dim]`, to `out`.
pub fn attend_one(
    q: &[f32],
    k_all: &Tensor,
    v_all: &Tensor,
    groups: usize,
    scale: f32,
    out: &mut Vec<f32>,
) -> CResult<()> {
    let (kv_heads, len, head_dim) = k_all.dims3()?;
    if v_all.dims3()? != (kv_heads, len, head_dim) || q.len() != kv_heads * groups * head_dim {
        return Err(candle_core::Error::Msg(
            "decode attention: query and cache shapes disagree".into(),
        ));
    }
    let (k_guard, k_layout) = k_all.storage_and_layout();
    let (v_guard, v_layout) = v_all.storage_and_layout();
    let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_guard, &*v_guard) else {
        return Err(candle_core::Error::Msg(
            "decode attention runs on the CPU only".into(),
        ));
    };
    let (k_data, v_data) = (k_cpu.as_slice::<f32>()?, v_cpu.as_slice::<f32>()?);
    // Checked once per call: the row offsets grow with head and position, so the last row of
    // the last head bounds them all; the loops below then only index.
    let rows = |data: &[f32], layout: &candle_core::Layout| -> CResult<(usize, usize, usize)> {
        let stride = layout.stride();
        if stride[2] != 1 {
            return Err(candle_core::Error::Msg(
                "decode attention: cache rows not dense".into(),
            ));
        }
        let (start, per_head, per_row) = (layout.start_offset(), stride[0], stride[1]);
        let empty = kv_heads == 0 || len == 0;
        if !empty && start + (kv_heads - 1) * per_head + (len - 1) * per_row + head_dim > data.len()
        {
            return Err(candle_core::Error::Msg(
                "decode attention: cache view out of range".into(),
            ));
        }
        Ok((start, per_head, per_row))
    };
    let (k_start, k_head, k_row) = rows(k_data, k_layout)?;
    let (v_start, v_head, v_row) = rows(v_data, v_layout)?;
    let mut scores = vec![0f32; len];
    let base = out.len();
    out.resize(base + q.len(), 0.0);
    for h in 0..kv_heads * groups {
        let kv = h / groups;
        let qh = &q[h * head_dim..(h + 1) * head_dim];
        let mut max = f32::NEG_INFINITY;
        for (p, score) in scores.iter_mut().enumerate() {
            let at = k_start + kv * k_head + p * k_row;
            *score = dot(qh, &k_data[at..at + head_dim]) * scale;
            max = max.max(*score);
        }
        let mut sum = 0f32;
        for score in scores.iter_mut() {
            *score = (*score - max).exp();
            sum += *score;
        }
        let oh = &mut out[base + h * head_dim..base + (h + 1) * head_dim];
        for (p, &w) in scores.iter().enumerate() {
            let at = v_start + kv * v_head + p * v_row;
            let w = w / sum;
            for (o, &v) in oh.iter_mut().zip(&v_data[at..at + head_dim]) {
                *o += w * v;
            }
        }
    }
    Ok(())
}

/// Dot product with 16 independent partial sums, so the compiler can use vector registers.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The fused loop equals the tensor-op attention it replaces, on a narrowed cache view.
    #[test]
    fn equals_tensor_attention_on_a_cache_view() -> CResult<()> {
        let dev = Device::Cpu;
        let (kv_heads, groups, head_dim, cap, len) = (3, 3, 64, 16, 11);
        let ramp =
            |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32) * f).sin()).collect() };
        let k_cache = Tensor::from_vec(
            ramp(kv_heads * cap * head_dim, 0.37),
            (kv_heads, cap, head_dim),
            &dev,
        )?;
        let v_cache = Tensor::from_vec(
            ramp(kv_heads * cap * head_dim, 0.11),
            (kv_heads, cap, head_dim),
            &dev,
        )?;
        let (k_all, v_all) = (k_cache.narrow(1, 0, len)?, v_cache.narrow(1, 0, len)?);
        let q = ramp(kv_heads * groups * head_dim, 0.23);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut fused = Vec::new();
        attend_one(&q, &k_all, &v_all, groups, scale, &mut fused)?;

        let qt = Tensor::from_vec(q.clone(), (kv_heads, groups, head_dim), &dev)?;
        let att = qt.matmul(&k_all.t()?)?.affine(scale as f64, 0.0)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let reference = att
            .matmul(&v_all.contiguous()?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(fused.len(), reference.len());
        let worst = fused
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "max difference {worst}");
        // Appends after what is already there.
        let mut two = vec![7.0];
        attend_one(&q, &k_all, &v_all, groups, scale, &mut two)?;
        assert_eq!(two[0], 7.0);
        assert_eq!(&two[1..], &fused[..]);
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_an_error() -> CResult<()> {
        let dev = Device::Cpu;
        let k = Tensor::zeros((2, 4, 8), DType::F32, &dev)?;
        let v = Tensor::zeros((2, 5, 8), DType::F32, &dev)?;
        assert!(attend_one(&[0.0; 32], &k, &v, 2, 1.0, &mut Vec::new()).is_err());
        assert!(attend_one(&[0.0; 31], &k, &k, 2, 1.0, &mut Vec::new()).is_err());
        Ok(())
    }
}
