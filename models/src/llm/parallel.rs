//! Run work on candle's persistent CPU thread pool (`CANDLE_NUM_THREADS` workers) without
//! shared mutable output: the output buffer is split into disjoint chunks up front.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Split `buf` into chunks of `chunk` elements (the last may be shorter) and call
/// `f(chunk_index, chunk)` once per chunk, spread over the pool's workers.
pub(crate) fn for_each_chunk_mut<T: Send>(
    buf: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunk = chunk.max(1);
    let pool = candle_core::utils::barrier_pool();
    if pool.n_workers() == 0 || buf.len() <= chunk {
        for (i, c) in buf.chunks_mut(chunk).enumerate() {
            f(i, c);
        }
        return;
    }
    let items: Vec<Mutex<&mut [T]>> = buf.chunks_mut(chunk).map(Mutex::new).collect();
    let cursor = AtomicUsize::new(0);
    pool.execute(|_| {
        loop {
            let i = cursor.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            // The cursor hands each item to exactly one worker, so this lock never waits; a
            // poisoned lock only means another item panicked (the pool re-raises that panic).
            let mut c = item.lock().unwrap_or_else(|e| e.into_inner());
            f(i, &mut c);
        }
    });
}

/// Chunks per worker: enough that a worker slowed by another process does not hold up the
/// rest (the machine is shared), few enough that handing them out costs nothing.
pub(crate) fn chunk_len(items: usize) -> usize {
    let workers = candle_core::utils::barrier_pool().n_workers() + 1;
    items.div_ceil(workers * 4).max(1)
}
