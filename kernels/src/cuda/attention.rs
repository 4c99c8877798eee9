//! Launching the paged attention kernels: `attention_split` over (rows, KV heads, key splits),
//! then `attention_merge`. One place for the launch plan, shared by the LLM and the checks.

use super::{CudaError, Gpu, Kernels};
use crate::llm_ref::HeadShape;

/// Keys one warp takes at a time, and warps per block (as in `llm.cu`).
const TILE: usize = 32;
const WARPS: usize = 4;
/// Blocks to aim for (about two per SM of an H100/H200) before splitting the keys further.
const TARGET_BLOCKS: usize = 264;
const MAX_SPLITS: usize = 64;

/// Device addresses and sizes of one attention launch (all buffers as in `llm.cu`).
#[derive(Debug, Clone, Copy)]
pub struct AttentionArgs {
    pub qkv: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub row_pos: u64,
    pub row_seq: u64,
    pub seq_pages: u64,
    pub page_table: u64,
    pub out: u64,
    pub rows: usize,
    /// Longest row: its position + 1.
    pub max_keys: usize,
    pub shape: HeadShape,
    pub page_size: usize,
    pub scale: f32,
}

/// How the keys are split: (splits, keys per split).
pub fn plan(rows: usize, n_kv: usize, max_keys: usize) -> (usize, usize) {
    let blocks = (rows * n_kv).max(1);
    let useful = max_keys.div_ceil(WARPS * TILE).max(1);
    let splits = TARGET_BLOCKS
        .div_ceil(blocks)
        .clamp(1, useful.min(MAX_SPLITS));
    let split_len = max_keys.div_ceil(splits).div_ceil(TILE) * TILE;
    (splits, split_len.max(TILE))
}

/// Floats of split scratch a launch needs.
pub fn partial_len(rows: usize, shape: HeadShape, splits: usize) -> usize {
    rows * shape.n_kv * splits * (shape.n_heads / shape.n_kv) * (shape.head_dim + 2)
}

/// Run both kernels; `partial` must hold [`partial_len`] floats for [`plan`]'s split count.
pub fn launch(g: &Gpu, k: &Kernels, a: &AttentionArgs, partial: u64) -> Result<(), CudaError> {
    let s = a.shape;
    let (splits, split_len) = plan(a.rows, s.n_kv, a.max_keys);
    let (nh, nkv, hd) = (s.n_heads as i32, s.n_kv as i32, s.head_dim as i32);
    g.launch(
        k.get("attention_split")?,
        (a.rows as u32, s.n_kv as u32, splits as u32),
        (32 * WARPS) as u32,
        &[
            &a.qkv,
            &a.k_cache,
            &a.v_cache,
            &a.row_pos,
            &a.row_seq,
            &a.seq_pages,
            &a.page_table,
            &partial,
            &nh,
            &nkv,
            &hd,
            &(a.page_size as i32),
            &a.scale,
            &(split_len as i32),
        ],
    )?;
    g.launch(
        k.get("attention_merge")?,
        (a.rows as u32, s.n_kv as u32, 1),
        128,
        &[&partial, &a.out, &nh, &nkv, &hd, &(splits as i32)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_every_key_and_spread_small_batches() {
        for (rows, kv, keys) in [
            (1, 2, 535),
            (256, 2, 535),
            (24, 2, 524),
            (1, 2, 1),
            (3, 7, 9000),
        ] {
            let (splits, len) = plan(rows, kv, keys);
            assert!(splits * len >= keys, "{rows} {kv} {keys}: {splits} x {len}");
            assert!((1..=MAX_SPLITS).contains(&splits));
            assert_eq!(len % TILE, 0);
        }
        assert!(plan(1, 2, 535).0 >= 4, "a lone decode row is split");
        assert_eq!(plan(256, 2, 535).0, 1, "a full batch needs no split");
    }
}
