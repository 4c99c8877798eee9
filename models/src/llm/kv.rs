//! One sequence's KV cache: per layer, keys and values as [kv_heads, capacity, head_dim] with a
//! shared fill length. Appends write in place; capacity doubles when full; truncation only
//! moves the length (what "keep only what was spoken" needs).
//!
//! A GPU model keeps its caches in a device-wide pool of fixed-size pages instead: the sequence
//! then holds only its page list ([`PagedKv`]), and the pages go back to the pool when the cache
//! is cleared or dropped.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor};

/// The free list of a device KV page pool (page ids only; the memory lives with the model).
#[derive(Debug)]
pub struct PagePool {
    free: Mutex<Vec<u32>>,
    pub page_size: usize,
    /// Bytes one page holds over all layers (keys and values).
    pub page_bytes: usize,
    pub total_pages: usize,
}

impl PagePool {
    pub fn new(total_pages: usize, page_size: usize, page_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new((0..total_pages as u32).rev().collect()),
            page_size,
            page_bytes,
            total_pages,
        })
    }

    pub fn free_pages(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }

    fn take(&self, n: usize) -> Option<Vec<u32>> {
        let mut free = self.free.lock().ok()?;
        if free.len() < n {
            return None;
        }
        let at = free.len() - n;
        Some(free.split_off(at))
    }

    fn give_back(&self, pages: &mut Vec<u32>) {
        if let Ok(mut free) = self.free.lock() {
            free.append(pages);
        }
        pages.clear();
    }
}

/// One sequence's pages in a [`PagePool`].
#[derive(Debug)]
pub struct PagedKv {
    pool: Arc<PagePool>,
    pub pages: Vec<u32>,
}

impl PagedKv {
    /// Make room for `tokens` tokens; false (and nothing taken) when the pool is short.
    pub fn reserve(&mut self, tokens: usize) -> bool {
        let need = tokens.div_ceil(self.pool.page_size);
        if need <= self.pages.len() {
            return true;
        }
        match self.pool.take(need - self.pages.len()) {
            Some(more) => {
                self.pages.extend(more);
                true
            }
            None => false,
        }
    }

    pub fn page_size(&self) -> usize {
        self.pool.page_size
    }
}

impl Drop for PagedKv {
    fn drop(&mut self) {
        self.pool.give_back(&mut self.pages);
    }
}

#[derive(Debug)]
pub struct SeqKv {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    paged: Option<PagedKv>,
}

impl SeqKv {
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: (0..n_layers).map(|_| None).collect(),
            len: 0,
            paged: None,
        }
    }

    /// An empty cache whose keys and values live in `pool`'s pages.
    pub fn paged(pool: Arc<PagePool>) -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
            paged: Some(PagedKv {
                pool,
                pages: Vec::new(),
            }),
        }
    }

    /// The page list of a paged cache.
    pub fn pages_mut(&mut self) -> Option<&mut PagedKv> {
        self.paged.as_mut()
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget everything after the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Drop the buffers (eviction); the next use re-prefills.
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            *l = None;
        }
        if let Some(p) = &mut self.paged {
            p.pool.give_back(&mut p.pages);
        }
        self.len = 0;
    }

    /// Bytes held by this cache's buffers.
    pub fn bytes(&self) -> usize {
        if let Some(p) = &self.paged {
            return p.pages.len() * p.pool.page_bytes;
        }
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * 4)
            .sum()
    }

    /// Append `k`, `v` ([kv_heads, t, head_dim]) for `layer` at the current length and return
    /// views of all cached keys and values including them. The caller must append to every
    /// layer, in order, before calling [`Self::commit`].
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (kv_heads, t, head_dim) = k.dims3()?;
        let need = self.len + t;
        let cap = match &self.layers[layer] {
            Some((kc, _)) => kc.dim(1)?,
            None => 0,
        };
        if need > cap {
            let new_cap = need.next_power_of_two().max(64);
            self.grow(layer, kv_heads, head_dim, new_cap, k.device())?;
        }
        let (kc, vc) = self.layers[layer]
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("kv layer missing after grow".into()))?;
        kc.slice_set(k, 1, self.len)?;
        vc.slice_set(v, 1, self.len)?;
        Ok((kc.narrow(1, 0, need)?, vc.narrow(1, 0, need)?))
    }

    fn grow(
        &mut self,
        layer: usize,
        kv_heads: usize,
        head_dim: usize,
        new_cap: usize,
        dev: &Device,
    ) -> Result<()> {
        let fresh = || Tensor::zeros((kv_heads, new_cap, head_dim), DType::F32, dev);
        let (k, v) = (fresh()?, fresh()?);
        if let Some((ok, ov)) = &self.layers[layer]
            && self.len > 0
        {
            k.slice_set(&ok.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
            v.slice_set(&ov.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
        }
        self.layers[layer] = Some((k, v));
        Ok(())
    }

    /// Every layer has appended `t` tokens: advance the length.
    pub fn commit(&mut self, t: usize) {
        self.len += t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_from_the_pool_and_go_back() {
        let pool = PagePool::new(4, 16, 100);
        let mut a = SeqKv::paged(pool.clone());
        let p = a.pages_mut().expect("paged");
        assert!(p.reserve(17));
        assert_eq!((p.pages.len(), pool.free_pages()), (2, 2));
        let mut b = SeqKv::paged(pool.clone());
        assert!(
            !b.pages_mut().expect("paged").reserve(3 * 16),
            "only 2 pages left"
        );
        assert_eq!(pool.free_pages(), 2, "a failed reserve takes nothing");
        assert_eq!(a.bytes(), 200);
        a.clear();
        assert_eq!(pool.free_pages(), 4);
        assert!(b.pages_mut().expect("paged").reserve(64));
        drop(b);
        assert_eq!(pool.free_pages(), 4);
    }

    fn filled(t: usize, start: f32) -> Tensor {
        let data: Vec<f32> = (0..2 * t * 4).map(|i| start + i as f32).collect();
        Tensor::from_vec(data, (2, t, 4), &Device::Cpu).expect("tensor")
    }

    #[test]
    fn grows_past_capacity_keeping_contents_and_truncates() {
        let mut kv = SeqKv::new(1);
        let a = filled(50, 0.0);
        kv.append(0, &a, &a).expect("append");
        kv.commit(50);
        let b = filled(30, 1000.0);
        let (k, _) = kv.append(0, &b, &b).expect("append past 64");
        kv.commit(30);
        assert_eq!(k.dims(), &[2, 80, 4]);
        let expect = Tensor::cat(&[&a, &b], 1).expect("cat");
        let diff = (k - expect)
            .expect("sub")
            .abs()
            .expect("abs")
            .sum_all()
            .expect("sum")
            .to_scalar::<f32>()
            .expect("scalar");
        assert_eq!(diff, 0.0);
        kv.truncate(10);
        assert_eq!(kv.len(), 10);
        let (k, _) = kv.append(0, &b, &b).expect("append after truncate");
        assert_eq!(k.dims(), &[2, 40, 4]);
    }
}
