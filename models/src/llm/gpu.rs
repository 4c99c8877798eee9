//! The llama/qwen2 decoder on a CUDA GPU, behind the same [`StepModel`] step as the CPU model,
//! so the engine (continuous batching, prefix cache, cancel, truncate-to-heard) is unchanged.
//!
//! - Weights: every GGUF tensor dequantized to bf16 at load (q/k/v fused into one matrix, gate and
//!   up into another), or synthetic values of the real shapes for throughput runs.
//! - One step: all new tokens of all sequences stacked as `[N, hidden]` rows; cuBLAS bf16 GEMMs
//!   (f32 accumulate and output; the residual adds are the GEMMs' beta = 1) and NVRTC kernels from
//!   `kernels/cuda/llm.cu` for the embedding gather, RMSNorm, bias and RoPE at each row's
//!   position with the KV append, paged causal attention (decode and prefill rows alike),
//!   SwiGLU, last-row norm, and sampling on the device: only token ids come back.
//! - KV cache: bf16 pages of [`PAGE_SIZE`] tokens in one pool per layer; a sequence's
//!   [`SeqKv`] holds its page list and gives the pages back when cleared or dropped.

use std::path::Path;
use std::sync::{Arc, Mutex};

use antiphon_kernels::cuda::attention::{self, AttentionArgs};
use antiphon_kernels::cuda::{CudaError, Gpu, Kernels, LLM_SOURCE, to_bf16_bits};
use antiphon_kernels::llm_ref::{self, HeadShape};
use candle_core::Device;
use candle_core::quantized::gguf_file::Content;
use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::CudaSlice;

use super::LlmError;
use super::gguf::{Arch, LmConfig};
use super::kv::{PagePool, SeqKv};
use super::model::StepSeq;
use super::sampling::Pick;
use super::step::StepModel;
use super::tokenizer::LmTokenizer;

/// Tokens per KV page.
pub const PAGE_SIZE: usize = 16;

/// cuBLAS workspace (NVIDIA's advice for Hopper is 32 MiB).
const BLAS_WORKSPACE: usize = 32 << 20;

/// How to place a model on the GPU.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Longest sequence (capped by the model's context length).
    pub max_positions: usize,
    /// Tokens the KV page pool holds over all sequences.
    pub kv_tokens: usize,
    /// Fill the weights with deterministic pseudo-random values instead of reading them: for
    /// throughput runs from a GGUF header alone (values change neither FLOPs nor traffic).
    pub synthetic: bool,
    /// Replay recorded CUDA graphs for decode steps.
    pub cuda_graphs: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            max_positions: 8192,
            kv_tokens: 256 * 1024,
            synthetic: false,
            cuda_graphs: true,
        }
    }
}

fn gpu_err(e: CudaError) -> LlmError {
    LlmError::Gpu(e.to_string())
}

struct Layer {
    attn_norm: CudaSlice<f32>,
    /// `[q + 2 kv, hidden]`
    wqkv: CudaSlice<u16>,
    bqkv: Option<CudaSlice<f32>>,
    /// `[hidden, q]`
    wo: CudaSlice<u16>,
    ffn_norm: CudaSlice<f32>,
    /// `[2 ffn, hidden]`: gate rows, then up rows.
    wgu: CudaSlice<u16>,
    /// `[hidden, ffn]`
    wdown: CudaSlice<u16>,
}

/// Per-step device buffers, grown to the largest step seen.
#[derive(Default)]
struct Scratch {
    rows: usize,
    seqs: usize,
    meta_len: usize,
    recent_len: usize,
    bufs: Option<Bufs>,
    /// Split scratch of the attention kernels.
    partial: Option<CudaSlice<f32>>,
    /// Bumped whenever a buffer above is reallocated: graphs recorded before hold stale addresses.
    generation: u64,
    /// Recorded decode steps by (rows, key bucket), valid for `graphs_generation`.
    graphs: std::collections::HashMap<(usize, usize), StepGraph>,
    graphs_generation: u64,
}

/// A recorded decode step.
struct StepGraph(cudarc::driver::CudaGraph);

// SAFETY: a CudaGraph is a handle to driver objects; the driver requires that calls on one graph
// be serialised, which holds because every use is under the `scratch` mutex of its model.
unsafe impl Send for StepGraph {}

struct Bufs {
    meta: CudaSlice<i32>,
    spec: CudaSlice<f32>,
    recent: CudaSlice<i32>,
    x: CudaSlice<f32>,
    h: CudaSlice<u16>,
    qkv: CudaSlice<f32>,
    att: CudaSlice<u16>,
    gu: CudaSlice<f32>,
    act: CudaSlice<u16>,
    last: CudaSlice<u16>,
    logits: CudaSlice<f32>,
    picked: CudaSlice<u32>,
}

/// What [`GpuLm::trace`] returns: the residual stream after each layer and the last row's logits.
#[derive(Debug, Clone)]
pub struct Trace {
    pub hidden: Vec<Vec<f32>>,
    pub logits: Vec<f32>,
}

pub struct GpuLm {
    pub config: LmConfig,
    pub tokenizer: LmTokenizer,
    gpu: Arc<Gpu>,
    k: Kernels,
    blas: CudaBlas,
    embed: CudaSlice<u16>,
    /// `None`: tied to the embedding.
    output: Option<CudaSlice<u16>>,
    norm: CudaSlice<f32>,
    layers: Vec<Layer>,
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
    k_cache: Vec<CudaSlice<u16>>,
    v_cache: Vec<CudaSlice<u16>>,
    pool: Arc<PagePool>,
    max_positions: usize,
    weight_bytes: usize,
    scratch: Mutex<Scratch>,
    /// When set, the next steps wait for the device after every operation and add its time
    /// here by name (benchmarks only: the waits cost time themselves).
    profile: Mutex<Option<Vec<(&'static str, f64)>>>,
    cuda_graphs: std::sync::atomic::AtomicBool,
    /// cuBLAS's workspace, set explicitly so GEMMs can be recorded in graphs.
    _blas_workspace: CudaSlice<u8>,
}

/// Reads (or invents) weights and uploads them as bf16.
struct Loader<'a> {
    gpu: &'a Gpu,
    k: &'a Kernels,
    content: &'a Content,
    file: std::fs::File,
    synthetic: bool,
    seed: u32,
    bytes: usize,
}

impl Loader<'_> {
    fn dims(&self, name: &str) -> Result<Vec<usize>, LlmError> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| t.shape.dims().to_vec())
            .ok_or_else(|| LlmError::Metadata(format!("missing tensor {name}")))
    }

    fn host_f32(&mut self, name: &str) -> Result<Vec<f32>, LlmError> {
        let t = self.content.tensor(&mut self.file, name, &Device::Cpu)?;
        Ok(t.dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// Several matrices stacked by rows, as one bf16 device matrix.
    fn matrix(&mut self, names: &[String]) -> Result<CudaSlice<u16>, LlmError> {
        let mut elems = 0;
        for n in names {
            elems += self.dims(n)?.iter().product::<usize>();
        }
        self.bytes += elems * 2;
        if self.synthetic {
            let buf = self.gpu.zeros::<u16>(elems).map_err(gpu_err)?;
            self.seed = self.seed.wrapping_add(0x9e37_79b9);
            let f = self.k.get("fill_bf16_hash").map_err(gpu_err)?;
            self.gpu
                .launch(
                    f,
                    (1024, 1, 1),
                    256,
                    &[&self.gpu.ptr(&buf), &(elems as u64), &self.seed, &0.05f32],
                )
                .map_err(gpu_err)?;
            return Ok(buf);
        }
        let mut host = Vec::with_capacity(elems);
        for n in names {
            host.extend(to_bf16_bits(&self.host_f32(n)?));
        }
        self.gpu.upload(&host).map_err(gpu_err)
    }

    fn vector(
        &mut self,
        names: &[String],
        synthetic_value: f32,
    ) -> Result<CudaSlice<f32>, LlmError> {
        let mut host = Vec::new();
        for n in names {
            if self.synthetic {
                let len: usize = self.dims(n)?.iter().product();
                host.extend(std::iter::repeat_n(synthetic_value, len));
            } else {
                host.extend(self.host_f32(n)?);
            }
        }
        self.bytes += host.len() * 4;
        self.gpu.upload(&host).map_err(gpu_err)
    }
}

impl GpuLm {
    /// Load a GGUF model onto `gpu` (with `synthetic`, the file may hold only the header and
    /// tensor table).
    pub fn load(gpu: Arc<Gpu>, path: &Path, opts: &GpuOptions) -> Result<Self, LlmError> {
        let super::model::OpenGguf {
            file,
            content,
            config,
            tokenizer,
        } = super::model::OpenGguf::read(path)?;
        let (nh, nkv, hd) = (config.n_heads, config.n_kv_heads, config.head_dim);
        if hd % 32 != 0 || hd > 128 || nh % nkv != 0 || nh / nkv > 8 {
            return Err(LlmError::Gpu(format!(
                "the GPU attention kernel takes head_dim a multiple of 32 up to 128 and at most 8 \
                 query heads per KV head; this model has head_dim {hd}, {nh} heads, {nkv} KV heads"
            )));
        }
        let k = gpu.load(&LLM_SOURCE).map_err(gpu_err)?;
        let blas = CudaBlas::new(gpu.stream.clone()).map_err(|e| gpu_err(e.into()))?;
        let blas_workspace = gpu.zeros::<u8>(BLAS_WORKSPACE).map_err(gpu_err)?;
        // SAFETY: the workspace is a live device allocation of BLAS_WORKSPACE bytes, kept in the
        // model for as long as the handle (both are dropped together).
        unsafe {
            cudarc::cublas::sys::cublasSetWorkspace_v2(
                *blas.handle(),
                gpu.ptr(&blas_workspace) as *mut _,
                BLAS_WORKSPACE,
            )
        }
        .result()
        .map_err(|e| gpu_err(e.into()))?;
        let mut ld = Loader {
            gpu: &gpu,
            k: &k,
            content: &content,
            file,
            synthetic: opts.synthetic,
            seed: 1,
            bytes: 0,
        };
        let one = |s: &str| vec![s.to_string()];
        let embed = ld.matrix(&one("token_embd.weight"))?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            Some(ld.matrix(&one("output.weight"))?)
        } else {
            None
        };
        let norm = ld.vector(&one("output_norm.weight"), 1.0)?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let names = |xs: &[&str]| xs.iter().map(|s| n(s)).collect::<Vec<_>>();
            let has_bias = content.tensor_infos.contains_key(&n("attn_q.bias"));
            layers.push(Layer {
                attn_norm: ld.vector(&names(&["attn_norm.weight"]), 1.0)?,
                wqkv: ld.matrix(&names(&["attn_q.weight", "attn_k.weight", "attn_v.weight"]))?,
                bqkv: if has_bias {
                    Some(ld.vector(&names(&["attn_q.bias", "attn_k.bias", "attn_v.bias"]), 0.01)?)
                } else {
                    None
                },
                wo: ld.matrix(&names(&["attn_output.weight"]))?,
                ffn_norm: ld.vector(&names(&["ffn_norm.weight"]), 1.0)?,
                wgu: ld.matrix(&names(&["ffn_gate.weight", "ffn_up.weight"]))?,
                wdown: ld.matrix(&names(&["ffn_down.weight"]))?,
            });
        }
        let weight_bytes = ld.bytes;
        let max_positions = opts.max_positions.min(config.context_length).max(1);
        let (cos, sin) = llm_ref::rope_tables(hd, config.rope_base, max_positions);
        let pages = opts.kv_tokens.div_ceil(PAGE_SIZE).max(1);
        let kd = nkv * hd;
        let mut k_cache = Vec::with_capacity(config.n_layers);
        let mut v_cache = Vec::with_capacity(config.n_layers);
        for _ in 0..config.n_layers {
            k_cache.push(gpu.zeros::<u16>(pages * PAGE_SIZE * kd).map_err(gpu_err)?);
            v_cache.push(gpu.zeros::<u16>(pages * PAGE_SIZE * kd).map_err(gpu_err)?);
        }
        let page_bytes = PAGE_SIZE * kd * 2 * 2 * config.n_layers;
        gpu.sync().map_err(gpu_err)?;
        Ok(Self {
            tokenizer,
            k,
            blas,
            embed,
            output,
            norm,
            layers,
            cos: gpu.upload(&cos).map_err(gpu_err)?,
            sin: gpu.upload(&sin).map_err(gpu_err)?,
            k_cache,
            v_cache,
            pool: PagePool::new(pages, PAGE_SIZE, page_bytes),
            max_positions,
            weight_bytes,
            scratch: Mutex::new(Scratch::default()),
            profile: Mutex::new(None),
            cuda_graphs: std::sync::atomic::AtomicBool::new(opts.cuda_graphs),
            _blas_workspace: blas_workspace,
            gpu,
            config,
        })
    }

    /// Bytes of weights on the device.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Bytes of KV cache one token takes (all layers, keys and values, bf16).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.config.n_layers * 2 * self.config.n_kv_heads * self.config.head_dim * 2
    }

    /// Start (or stop, returning what was gathered) per-operation timing of the following steps.
    pub fn profile(&self, on: bool) -> Vec<(&'static str, f64)> {
        let Ok(mut p) = self.profile.lock() else {
            return Vec::new();
        };
        let gathered = p.take().unwrap_or_default();
        if on {
            *p = Some(Vec::new());
        }
        gathered
    }

    pub fn pool(&self) -> &Arc<PagePool> {
        &self.pool
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// `y[n, out] = x[n, inp] · w[out, inp]^T (+ y if accumulate)`, bf16 in, f32 out.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        n: usize,
        out: usize,
        inp: usize,
        x: u64,
        w: u64,
        y: u64,
        accumulate: bool,
    ) -> Result<(), LlmError> {
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
        // Row-major y = x w^T is column-major y^T = w^T' x^T': cuBLAS sees w (row-major
        // [out, inp]) as a column-major [inp, out] matrix and transposes it.
        // SAFETY: x, w and y are live device allocations of at least n*inp, out*inp and n*out
        // elements of the stated types (the callers size the scratch buffers for n rows), and
        // the handle is bound to the stream all of them are used on.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                out as i32,
                n as i32,
                inp as i32,
                (&alpha) as *const f32 as *const _,
                w as *const _,
                cudaDataType::CUDA_R_16BF,
                inp as i32,
                x as *const _,
                cudaDataType::CUDA_R_16BF,
                inp as i32,
                (&beta) as *const f32 as *const _,
                y as *mut _,
                cudaDataType::CUDA_R_32F,
                out as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| gpu_err(e.into()))
    }

    fn ensure_scratch(
        &self,
        sc: &mut Scratch,
        rows: usize,
        seqs: usize,
        meta: usize,
        recent: usize,
    ) -> Result<(), LlmError> {
        if sc.bufs.is_some()
            && rows <= sc.rows
            && seqs <= sc.seqs
            && meta <= sc.meta_len
            && recent <= sc.recent_len
        {
            return Ok(());
        }
        let c = &self.config;
        let (rows, seqs) = (rows.max(sc.rows).max(16), seqs.max(sc.seqs).max(4));
        let (meta, recent) = (
            meta.max(sc.meta_len).max(256),
            recent.max(sc.recent_len).max(64),
        );
        let qd = c.n_heads * c.head_dim;
        let qkv = qd + 2 * c.n_kv_heads * c.head_dim;
        let g = &self.gpu;
        let e = gpu_err;
        sc.generation += 1;
        sc.bufs = Some(Bufs {
            meta: g.zeros(meta).map_err(e)?,
            spec: g.zeros(4 * seqs).map_err(e)?,
            recent: g.zeros(recent).map_err(e)?,
            x: g.zeros(rows * c.hidden).map_err(e)?,
            h: g.zeros(rows * c.hidden).map_err(e)?,
            qkv: g.zeros(rows * qkv).map_err(e)?,
            att: g.zeros(rows * qd).map_err(e)?,
            gu: g.zeros(rows * 2 * c.ffn).map_err(e)?,
            act: g.zeros(rows * c.ffn).map_err(e)?,
            last: g.zeros(seqs * c.hidden).map_err(e)?,
            logits: g.zeros(seqs * c.vocab_size).map_err(e)?,
            picked: g.zeros(seqs).map_err(e)?,
        });
        (sc.rows, sc.seqs, sc.meta_len, sc.recent_len) = (rows, seqs, meta, recent);
        Ok(())
    }

    /// The step itself; with `trace`, also copies out the residual stream after each layer
    /// and the logits (for the equivalence tests).
    fn run(
        &self,
        seqs: &mut [StepSeq<'_>],
        picks: &[Option<Pick<'_>>],
        mut trace: Option<&mut Trace>,
    ) -> Result<Vec<Option<u32>>, LlmError> {
        let c = &self.config;
        let n = super::model::check_step(seqs, self.max_positions, c.vocab_size)?;
        // Pages first: a step that cannot get them fails before touching any cache.
        for s in seqs.iter_mut() {
            let want = s.kv.len() + s.tokens.len();
            let pages = s
                .kv
                .pages_mut()
                .ok_or_else(|| LlmError::Gpu("a CPU cache was given to the GPU model".into()))?;
            if !pages.reserve(want) {
                return Err(LlmError::Busy("the GPU KV cache is full"));
            }
        }
        // One upload of all step metadata: ids, positions, sequence of each row, cache slot of
        // each row, each sequence's offset into the page table, last row of each sequence,
        // the page table, and the penalty windows' offsets.
        let s_n = seqs.len();
        let mut meta: Vec<i32> = Vec::with_capacity(4 * n + 3 * s_n + 64);
        let mut page_table: Vec<i32> = Vec::new();
        let mut seq_pages = Vec::with_capacity(s_n);
        let (mut pos, mut row_seq, mut slot, mut last_rows) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (si, s) in seqs.iter_mut().enumerate() {
            let past = s.kv.len();
            let pages =
                s.kv.pages_mut()
                    .map(|p| p.pages.clone())
                    .unwrap_or_default();
            seq_pages.push(page_table.len() as i32);
            for (j, &t) in s.tokens.iter().enumerate() {
                let p = past + j;
                meta.push(t as i32);
                pos.push(p as i32);
                row_seq.push(si as i32);
                slot.push((pages[p / PAGE_SIZE] as usize * PAGE_SIZE + p % PAGE_SIZE) as i32);
            }
            page_table.extend(pages.iter().map(|&p| p as i32));
            last_rows.push((meta.len() - 1) as i32);
        }
        let mut recent: Vec<i32> = Vec::new();
        let mut recent_off = vec![0i32];
        let mut spec = vec![0f32; 4 * s_n];
        for i in 0..s_n {
            let p = picks.get(i).copied().flatten().unwrap_or(Pick::GREEDY);
            spec[i] = p.temperature;
            spec[s_n + i] = p.top_p;
            spec[2 * s_n + i] = p.penalty;
            spec[3 * s_n + i] = p.uniform;
            recent.extend(p.recent.iter().map(|&t| t as i32));
            recent_off.push(recent.len() as i32);
        }
        let off_pos = meta.len();
        meta.extend(&pos);
        let off_seq = meta.len();
        meta.extend(&row_seq);
        let off_slot = meta.len();
        meta.extend(&slot);
        let off_seq_pages = meta.len();
        meta.extend(&seq_pages);
        let off_last = meta.len();
        meta.extend(&last_rows);
        let off_recent_off = meta.len();
        meta.extend(&recent_off);
        let off_pages = meta.len();
        meta.extend(&page_table);

        let mut guard = self
            .scratch
            .lock()
            .map_err(|_| LlmError::Gpu("scratch lock poisoned".into()))?;
        let sc: &mut Scratch = &mut guard;
        self.ensure_scratch(sc, n, s_n, meta.len(), recent.len())?;
        let g = &*self.gpu;
        let shape = HeadShape {
            n_heads: c.n_heads,
            n_kv: c.n_kv_heads,
            head_dim: c.head_dim,
        };
        let profiling = self.profile.lock().map(|p| p.is_some()).unwrap_or(false);
        // Pure decode steps replay a recorded graph (one launch instead of ~10 per layer). Its
        // attention plan is fixed per power-of-two bucket of the longest row, so one recording
        // serves a sequence for many steps (the kernels skip keys past each row's own end).
        let graphed = self.cuda_graphs.load(std::sync::atomic::Ordering::Relaxed)
            && trace.is_none()
            && !profiling
            && n == s_n;
        let max_keys = pos.iter().copied().max().unwrap_or(0) as usize + 1;
        let max_keys = if graphed {
            max_keys.next_power_of_two().max(128)
        } else {
            max_keys
        };
        let (splits, _) = attention::plan(n, c.n_kv_heads, max_keys);
        let partial_len = attention::partial_len(n, shape, splits);
        if sc.partial.as_ref().is_none_or(|p| p.len() < partial_len) {
            sc.partial = Some(
                g.zeros::<f32>(partial_len.next_power_of_two())
                    .map_err(gpu_err)?,
            );
            sc.generation += 1;
        }
        let partial = sc.partial.as_ref().map_or(0, |p| g.ptr(p));
        let b = sc
            .bufs
            .as_mut()
            .ok_or_else(|| LlmError::Gpu("no scratch".into()))?;
        g.write(&meta, &mut b.meta).map_err(gpu_err)?;
        g.write(&spec, &mut b.spec).map_err(gpu_err)?;
        g.write(&recent, &mut b.recent).map_err(gpu_err)?;
        let b: &Bufs = b;
        let mut marks: Vec<(&'static str, f64)> = Vec::new();
        let mut last_mark = std::time::Instant::now();
        let mut mark = |name: &'static str| -> Result<(), LlmError> {
            if profiling {
                g.sync().map_err(gpu_err)?;
                let now = std::time::Instant::now();
                marks.push((name, (now - last_mark).as_secs_f64()));
                last_mark = now;
            }
            Ok(())
        };
        mark("upload")?;
        let mp = g.ptr(&b.meta);
        let at = |off: usize| mp + 4 * off as u64;
        let (x, h, qkv, att, gu, act) = (
            g.ptr(&b.x),
            g.ptr(&b.h),
            g.ptr(&b.qkv),
            g.ptr(&b.att),
            g.ptr(&b.gu),
            g.ptr(&b.act),
        );
        let (nh, nkv, hd) = (c.n_heads as i32, c.n_kv_heads as i32, c.head_dim as i32);
        let hidden = c.hidden as i32;
        let eps = c.rms_eps as f32;
        let qd = c.n_heads * c.head_dim;
        let qkv_w = qd + 2 * c.n_kv_heads * c.head_dim;
        let rows = n as u32;
        let kf = |name| self.k.get(name).map_err(gpu_err);
        let launch = |f, grid, block, args: &[&dyn antiphon_kernels::cuda::KernelArg]| {
            g.launch(f, grid, block, args).map_err(gpu_err)
        };

        let mut issue = || -> Result<(), LlmError> {
            // embed_rows(table, ids, x, hidden)
            launch(
                kf("embed_rows")?,
                (rows, 1, 1),
                256,
                &[&g.ptr(&self.embed), &at(0), &x, &hidden],
            )?;
            mark("embed")?;
            let neox = matches!(c.arch, Arch::Qwen2) as i32;
            let scale = 1.0 / (c.head_dim as f32).sqrt();
            for (li, l) in self.layers.iter().enumerate() {
                // rms_norm_bf16(x, w, rows = all, out, hidden, eps)
                launch(
                    kf("rms_norm_bf16")?,
                    (rows, 1, 1),
                    256,
                    &[&x, &g.ptr(&l.attn_norm), &0u64, &h, &hidden, &eps],
                )?;
                mark("rms_norm")?;
                self.gemm(n, qkv_w, c.hidden, h, g.ptr(&l.wqkv), qkv, false)?;
                mark("gemm qkv")?;
                let bias = l.bqkv.as_ref().map_or(0u64, |b| g.ptr(b));
                let (kc, vc) = (g.ptr(&self.k_cache[li]), g.ptr(&self.v_cache[li]));
                // qkv_rope_append(qkv, bias, row_pos, row_slot, cos, sin, k_cache, v_cache, nh, nkv, hd, neox)
                launch(
                    kf("qkv_rope_append")?,
                    (rows, 1, 1),
                    128,
                    &[
                        &qkv,
                        &bias,
                        &at(off_pos),
                        &at(off_slot),
                        &g.ptr(&self.cos),
                        &g.ptr(&self.sin),
                        &kc,
                        &vc,
                        &nh,
                        &nkv,
                        &hd,
                        &neox,
                    ],
                )?;
                mark("rope+append")?;
                attention::launch(
                    g,
                    &self.k,
                    &AttentionArgs {
                        qkv,
                        k_cache: kc,
                        v_cache: vc,
                        row_pos: at(off_pos),
                        row_seq: at(off_seq),
                        seq_pages: at(off_seq_pages),
                        page_table: at(off_pages),
                        out: att,
                        rows: n,
                        max_keys,
                        shape,
                        page_size: PAGE_SIZE,
                        scale,
                    },
                    partial,
                )
                .map_err(gpu_err)?;
                mark("attention")?;
                self.gemm(n, c.hidden, qd, att, g.ptr(&l.wo), x, true)?;
                mark("gemm o")?;
                launch(
                    kf("rms_norm_bf16")?,
                    (rows, 1, 1),
                    256,
                    &[&x, &g.ptr(&l.ffn_norm), &0u64, &h, &hidden, &eps],
                )?;
                mark("rms_norm")?;
                self.gemm(n, 2 * c.ffn, c.hidden, h, g.ptr(&l.wgu), gu, false)?;
                mark("gemm gate+up")?;
                // silu_mul_bf16(gu, out, ffn)
                launch(
                    kf("silu_mul_bf16")?,
                    (rows, 1, 1),
                    256,
                    &[&gu, &act, &(c.ffn as i32)],
                )?;
                mark("silu_mul")?;
                self.gemm(n, c.hidden, c.ffn, act, g.ptr(&l.wdown), x, true)?;
                mark("gemm down")?;
                if let Some(t) = trace.as_deref_mut() {
                    t.hidden
                        .push(g.download(&b.x, n * c.hidden).map_err(gpu_err)?);
                }
            }
            let last = g.ptr(&b.last);
            launch(
                kf("rms_norm_bf16")?,
                (s_n as u32, 1, 1),
                256,
                &[&x, &g.ptr(&self.norm), &at(off_last), &last, &hidden, &eps],
            )?;
            let out_w = g.ptr(self.output.as_ref().unwrap_or(&self.embed));
            let logits = g.ptr(&b.logits);
            self.gemm(s_n, c.vocab_size, c.hidden, last, out_w, logits, false)?;
            mark("final norm + gemm logits")?;
            if let Some(t) = trace.as_deref_mut() {
                let all = g.download(&b.logits, s_n * c.vocab_size).map_err(gpu_err)?;
                t.logits = all[(s_n - 1) * c.vocab_size..].to_vec();
            }
            let sp = g.ptr(&b.spec);
            let f4 = |i: usize| sp + 4 * (i * s_n) as u64;
            // sample_rows(logits, vocab, temperature, top_p, penalty, uniform, recent, recent_off, out)
            launch(
                kf("sample_rows")?,
                (s_n as u32, 1, 1),
                llm_ref::SAMPLE_THREADS as u32,
                &[
                    &logits,
                    &(c.vocab_size as i32),
                    &f4(0),
                    &f4(1),
                    &f4(2),
                    &f4(3),
                    &g.ptr(&b.recent),
                    &at(off_recent_off),
                    &g.ptr(&b.picked),
                ],
            )?;
            mark("sample")?;
            Ok(())
        };
        let generation = sc.generation;
        if sc.graphs_generation != generation || sc.graphs.len() > 512 {
            sc.graphs.clear();
            sc.graphs_generation = generation;
        }
        let key = (n, max_keys);
        match (graphed, sc.graphs.get(&key)) {
            (true, Some(graph)) => graph.0.launch().map_err(|e| gpu_err(e.into()))?,
            (true, None) => match self.record(&mut issue) {
                Ok(graph) => {
                    graph.0.launch().map_err(|e| gpu_err(e.into()))?;
                    sc.graphs.insert(key, graph);
                }
                Err(why) => {
                    tracing::warn!("CUDA graph recording failed ({why}); stepping without graphs");
                    self.cuda_graphs
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    issue()?;
                }
            },
            (false, _) => issue()?,
        }
        let ids = g.download(&b.picked, s_n).map_err(gpu_err)?;
        mark("download ids")?;
        if profiling
            && let Ok(mut p) = self.profile.lock()
            && let Some(p) = p.as_mut()
        {
            p.extend(marks);
        }
        drop(guard);
        for s in seqs.iter_mut() {
            s.kv.commit(s.tokens.len());
        }
        Ok(ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| picks.get(i).copied().flatten().map(|_| id))
            .collect())
    }

    /// Record what `issue` launches as a graph (nothing runs while recording).
    fn record(
        &self,
        issue: &mut dyn FnMut() -> Result<(), LlmError>,
    ) -> Result<StepGraph, LlmError> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        let stream = &self.gpu.stream;
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| gpu_err(e.into()))?;
        let issued = issue();
        // Always end the capture, even after a failed launch, so the stream is usable again.
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        issued?;
        match graph {
            Ok(Some(g)) => Ok(StepGraph(g)),
            Ok(None) => Err(LlmError::Gpu("the captured graph is empty".into())),
            Err(e) => Err(gpu_err(e.into())),
        }
    }

    /// Use recorded CUDA graphs for decode steps (on by default).
    pub fn set_cuda_graphs(&self, on: bool) {
        self.cuda_graphs
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Run `tokens` as one fresh sequence and return the residual stream after every layer
    /// (`[tokens, hidden]` each) and the last token's logits.
    pub fn trace(&self, tokens: &[u32]) -> Result<Trace, LlmError> {
        let mut kv = StepModel::new_cache(self);
        let mut t = Trace {
            hidden: Vec::new(),
            logits: Vec::new(),
        };
        self.run(
            &mut [StepSeq {
                tokens,
                kv: &mut kv,
            }],
            &[None],
            Some(&mut t),
        )?;
        Ok(t)
    }
}

impl StepModel for GpuLm {
    fn config(&self) -> &LmConfig {
        &self.config
    }
    fn tokenizer(&self) -> &LmTokenizer {
        &self.tokenizer
    }
    fn max_positions(&self) -> usize {
        self.max_positions
    }
    fn new_cache(&self) -> SeqKv {
        SeqKv::paged(self.pool.clone())
    }
    fn device(&self) -> String {
        self.gpu.info.to_string()
    }
    fn step(
        &self,
        seqs: &mut [StepSeq<'_>],
        picks: &[Option<Pick<'_>>],
    ) -> Result<Vec<Option<u32>>, LlmError> {
        self.run(seqs, picks, None)
    }
}
