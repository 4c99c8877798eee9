//! A llama/qwen2 decoder over candle quantized matmuls, run on a batch of sequences at once.
//!
//! One step takes any mix of sequences, each with its own KV cache and any number of new tokens
//! (1 for decode, a chunk for prefill). All new tokens are stacked into one `[N, hidden]`
//! activation so every projection and MLP matmul reads each weight once per step for the whole
//! batch (candle tiles rows of a quantized matmul over each weight block). Attention is then done
//! per sequence against its own cache, with RoPE at each token's own position.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Result as CResult, Tensor};

use super::LlmError;
use super::decode_attention;
use super::gguf::{Arch, LmConfig};
use super::kv::SeqKv;
use super::q8gemm::{self, PackedQ8};
use super::tokenizer::LmTokenizer;

/// How to load weights.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Re-quantize Q4_1/Q5_0/Q5_1 weights to Q8_0 at load time. candle 0.11 has no SIMD dot
    /// product for those three types (Q4_0, Q8_0 and the K-quants have AVX paths), so this is
    /// several times faster (Qwen2.5-0.5B's Q4_K_M file is mostly Q5_0), and SmolLM2's Q4_1
    /// file, which loops under greedy decoding, behaves better as Q8_0 (see docs/LLM.md).
    /// Costs ~1.5-2x memory for those tensors and about a second at load.
    pub requantize_to_q8: bool,
    /// Longest sequence the RoPE tables cover (capped by the model's context length).
    pub max_positions: usize,
    /// Keep a dense f32 copy of every layer matrix and use it for prefill chunks (sequences
    /// feeding 2+ tokens in a step); decode rows keep using the quantized weights. Costs
    /// 4 bytes per layer parameter (SmolLM2 ~0.4 GB, Qwen 0.5B ~1.4 GB); see docs/LLM.md.
    pub dense_prefill: bool,
    /// Pack every layer matrix and the output matrix for our 8-bit AVX-512 VNNI kernel
    /// ([`super::q8gemm`]) when the CPU has it; otherwise (or when false) candle's quantized
    /// matmul runs. K-quant tensors (Q4_K/Q6_K) are re-quantized to 8 bits per 32-block for it.
    pub q8_kernel: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            requantize_to_q8: true,
            max_positions: 8192,
            dense_prefill: false,
            q8_kernel: true,
        }
    }
}

/// A quantized weight: packed for our kernel, or candle's quantized matmul.
enum QWeight {
    Packed(PackedQ8),
    Candle(QMatMul),
}

impl QWeight {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        match self {
            QWeight::Packed(w) => w.forward(x),
            QWeight::Candle(w) => w.forward(x),
        }
    }
}

/// A projection: quantized weights for decode rows, and optionally a dense f32 copy for
/// prefill chunks (a dense GEMM beats quantized dot products once many rows share the weights).
struct Proj {
    q: QWeight,
    dense: Option<Tensor>,
}

impl Proj {
    /// `runs`: consecutive row ranges of `x` and whether each uses the dense copy.
    fn forward(&self, x: &Tensor, runs: &[(usize, usize, bool)]) -> CResult<Tensor> {
        let one = |x: &Tensor, dense: bool| match (&self.dense, dense) {
            (Some(w), true) => x.matmul(&w.t()?),
            _ => self.q.forward(x),
        };
        if self.dense.is_none() {
            return self.q.forward(x);
        }
        if let [(_, _, dense)] = runs {
            return one(x, *dense);
        }
        let parts = runs
            .iter()
            .map(|&(start, len, dense)| one(&x.narrow(0, start, len)?, dense))
            .collect::<CResult<Vec<_>>>()?;
        Tensor::cat(&parts, 0)
    }
}

struct Layer {
    attn_norm: Tensor,
    wq: Proj,
    wk: Proj,
    wv: Proj,
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    wo: Proj,
    ffn_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
}

/// The loaded model: weights, tokenizer and RoPE tables. Shared read-only; all mutable state
/// (KV caches) lives in [`SeqKv`] values owned by the caller.
pub struct QuantLm {
    pub config: LmConfig,
    pub tokenizer: LmTokenizer,
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QWeight,
    cos: Tensor,
    sin: Tensor,
    max_positions: usize,
    device: Device,
}

/// One sequence's part of a step: its new tokens and its cache (they go at `kv.len()..`).
pub struct StepSeq<'a> {
    pub tokens: &'a [u32],
    pub kv: &'a mut SeqKv,
}

struct Loader<'a> {
    content: &'a Content,
    file: std::fs::File,
    device: Device,
    requantize: bool,
    dense: bool,
    packed: bool,
}

impl Loader<'_> {
    fn q(&mut self, name: &str) -> CResult<QTensor> {
        let t = self.content.tensor(&mut self.file, name, &self.device)?;
        if self.requantize
            && matches!(
                t.dtype(),
                GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
            )
        {
            let f = t.dequantize(&self.device)?;
            return QTensor::quantize(&f, GgmlDType::Q8_0);
        }
        Ok(t)
    }
    fn weight(&self, q: QTensor) -> CResult<QWeight> {
        if self.packed {
            Ok(QWeight::Packed(PackedQ8::from_qtensor(&q)?))
        } else {
            Ok(QWeight::Candle(QMatMul::from_qtensor(q)?))
        }
    }
    fn mm(&mut self, name: &str) -> CResult<QWeight> {
        let q = self.q(name)?;
        self.weight(q)
    }
    fn proj(&mut self, name: &str) -> CResult<Proj> {
        let q = self.q(name)?;
        let dense = if self.dense {
            Some(q.dequantize(&self.device)?)
        } else {
            None
        };
        Ok(Proj {
            q: self.weight(q)?,
            dense,
        })
    }
    fn f32(&mut self, name: &str) -> CResult<Tensor> {
        self.content
            .tensor(&mut self.file, name, &self.device)?
            .dequantize(&self.device)
    }
    fn opt_f32(&mut self, name: &str) -> CResult<Option<Tensor>> {
        if self.content.tensor_infos.contains_key(name) {
            Ok(Some(self.f32(name)?))
        } else {
            Ok(None)
        }
    }
}

impl QuantLm {
    pub fn load(path: &Path, opts: LoadOptions) -> Result<Self, LlmError> {
        let gguf_err = |source| LlmError::Gguf {
            path: path.to_owned(),
            source,
        };
        let OpenGguf {
            file,
            content,
            config,
            tokenizer,
        } = OpenGguf::read(path)?;
        let device = Device::Cpu;
        let mut ld = Loader {
            content: &content,
            file,
            device: device.clone(),
            requantize: opts.requantize_to_q8,
            dense: opts.dense_prefill,
            packed: opts.q8_kernel && q8gemm::available(),
        };
        let has_output = content.tensor_infos.contains_key("output.weight");
        // The embedding is only read row by row, so its format does not matter for speed;
        // when it doubles as the output matrix (tied) it gets the matmul treatment.
        let embed = if has_output {
            content
                .tensor(&mut ld.file, "token_embd.weight", &device)
                .map_err(gguf_err)?
        } else {
            ld.q("token_embd.weight").map_err(gguf_err)?
        };
        let embed = Arc::new(embed);
        let output = if has_output {
            ld.mm("output.weight").map_err(gguf_err)?
        } else {
            // Tied embeddings (SmolLM2).
            if ld.packed {
                QWeight::Packed(PackedQ8::from_qtensor(&embed).map_err(gguf_err)?)
            } else {
                QWeight::Candle(QMatMul::from_arc(embed.clone()).map_err(gguf_err)?)
            }
        };
        let norm = ld.f32("output_norm.weight").map_err(gguf_err)?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let layer = (|| -> CResult<Layer> {
                Ok(Layer {
                    attn_norm: ld.f32(&n("attn_norm.weight"))?,
                    wq: ld.proj(&n("attn_q.weight"))?,
                    wk: ld.proj(&n("attn_k.weight"))?,
                    wv: ld.proj(&n("attn_v.weight"))?,
                    bq: ld.opt_f32(&n("attn_q.bias"))?,
                    bk: ld.opt_f32(&n("attn_k.bias"))?,
                    bv: ld.opt_f32(&n("attn_v.bias"))?,
                    wo: ld.proj(&n("attn_output.weight"))?,
                    ffn_norm: ld.f32(&n("ffn_norm.weight"))?,
                    gate: ld.proj(&n("ffn_gate.weight"))?,
                    up: ld.proj(&n("ffn_up.weight"))?,
                    down: ld.proj(&n("ffn_down.weight"))?,
                })
            })()
            .map_err(gguf_err)?;
            layers.push(layer);
        }
        let max_positions = opts.max_positions.min(config.context_length).max(1);
        let (cos, sin) = rope_tables(config.head_dim, config.rope_base, max_positions, &device)?;
        Ok(Self {
            config,
            tokenizer,
            embed,
            layers,
            norm,
            output,
            cos,
            sin,
            max_positions,
            device,
        })
    }

    /// Longest sequence (cached + new tokens) a step accepts.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> SeqKv {
        SeqKv::new(self.config.n_layers)
    }

    /// Bytes of KV cache one token takes (all layers, keys and values, f32).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.config.n_layers * 2 * self.config.n_kv_heads * self.config.head_dim * 4
    }

    /// Run one step: append every sequence's new tokens to its cache and return the logits of
    /// each sequence's last new token, `[seqs.len(), vocab]`.
    pub fn forward(&self, seqs: &mut [StepSeq<'_>]) -> Result<Tensor, LlmError> {
        let n = check_step(seqs, self.max_positions, self.config.vocab_size)?;
        let logits = self.forward_inner(seqs, n, None)?;
        for s in seqs.iter_mut() {
            s.kv.commit(s.tokens.len());
        }
        Ok(logits)
    }

    /// Run `tokens` as one fresh sequence and return the residual stream after every layer
    /// (`[tokens, hidden]` each, flattened) and the last token's logits: the reference the GPU
    /// model is compared with.
    pub fn trace(&self, tokens: &[u32]) -> Result<(Vec<Vec<f32>>, Vec<f32>), LlmError> {
        let mut kv = self.new_cache();
        let mut hidden = Vec::new();
        let mut seqs = [StepSeq {
            tokens,
            kv: &mut kv,
        }];
        let logits = self.forward_inner(&mut seqs, tokens.len(), Some(&mut hidden))?;
        let hidden = hidden
            .iter()
            .map(|t| t.flatten_all()?.to_vec1::<f32>())
            .collect::<CResult<Vec<_>>>()?;
        Ok((hidden, logits.flatten_all()?.to_vec1::<f32>()?))
    }

    fn forward_inner(
        &self,
        seqs: &mut [StepSeq<'_>],
        n: usize,
        mut trace: Option<&mut Vec<Tensor>>,
    ) -> CResult<Tensor> {
        let c = &self.config;
        let (nh, nkv, hd) = (c.n_heads, c.n_kv_heads, c.head_dim);
        let groups = nh / nkv;
        let eps = c.rms_eps as f32;
        let scale = 1.0 / (hd as f64).sqrt();

        let mut ids = Vec::with_capacity(n);
        let mut pos = Vec::with_capacity(n);
        let mut last_rows = Vec::with_capacity(seqs.len());
        for s in seqs.iter() {
            let past = s.kv.len();
            for (j, &t) in s.tokens.iter().enumerate() {
                ids.push(t);
                pos.push((past + j) as u32);
            }
            last_rows.push((ids.len() - 1) as u32);
        }
        // Row runs by path: a sequence feeding 2+ tokens (prefill) may use dense weights.
        let mut runs: Vec<(usize, usize, bool)> = Vec::new();
        let mut row = 0;
        for s in seqs.iter() {
            let t = s.tokens.len();
            let dense = t >= 2;
            match runs.last_mut() {
                Some(last) if last.2 == dense => last.1 += t,
                _ => runs.push((row, t, dense)),
            }
            row += t;
        }
        let ids = Tensor::from_vec(ids, n, &self.device)?;
        let pos = Tensor::from_vec(pos, n, &self.device)?;
        let cos = self.cos.index_select(&pos, 0)?.reshape((n, 1, hd / 2))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((n, 1, hd / 2))?;
        let rope = |x: &Tensor, heads: usize| -> CResult<Tensor> {
            // Each token is its own "batch" entry so each gets its own position.
            let x = x.reshape((n, heads, 1, hd))?;
            let y = match c.arch {
                Arch::Llama => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
                Arch::Qwen2 => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
            };
            y.reshape((n, heads, hd))
        };
        let add_bias = |x: Tensor, b: &Option<Tensor>| -> CResult<Tensor> {
            match b {
                Some(b) => x.broadcast_add(b),
                None => Ok(x),
            }
        };

        let mut x = self.embed.embedding(&ids)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let q = add_bias(layer.wq.forward(&h, &runs)?, &layer.bq)?;
            let k = add_bias(layer.wk.forward(&h, &runs)?, &layer.bk)?;
            let v = add_bias(layer.wv.forward(&h, &runs)?, &layer.bv)?;
            let q = rope(&q, nh)?;
            let k = rope(&k, nkv)?;
            let v = v.reshape((n, nkv, hd))?;

            let mut outs = Vec::with_capacity(seqs.len());
            let mut off = 0;
            // Decoding sequences (one new token) attend in one loop over their cache.
            let q_rows = if seqs.iter().any(|s| s.tokens.len() == 1) {
                q.flatten_all()?.to_vec1::<f32>()?
            } else {
                Vec::new()
            };
            for s in seqs.iter_mut() {
                let t = s.tokens.len();
                let past = s.kv.len();
                let ki = k.narrow(0, off, t)?.transpose(0, 1)?.contiguous()?;
                let vi = v.narrow(0, off, t)?.transpose(0, 1)?.contiguous()?;
                let (k_all, v_all) = s.kv.append(li, &ki, &vi)?;
                if t == 1 {
                    let width = nh * hd;
                    let mut o = Vec::with_capacity(width);
                    decode_attention::attend_one(
                        &q_rows[off * width..(off + 1) * width],
                        &k_all,
                        &v_all,
                        groups,
                        scale as f32,
                        &mut o,
                    )?;
                    outs.push(Tensor::from_vec(o, (1, width), &self.device)?);
                    off += 1;
                    continue;
                }
                let qi = q.narrow(0, off, t)?.transpose(0, 1)?.contiguous()?;
                let total = past + t;
                // Query heads that share a KV head are stacked as rows: [kv_heads, groups*t, hd].
                let qg = qi.reshape((nkv, groups * t, hd))?;
                let mut att = qg.matmul(&k_all.t()?)?.affine(scale, 0.0)?;
                if t > 1 {
                    att = att.broadcast_add(&causal_mask(groups, t, past, &self.device)?)?;
                }
                let att = candle_nn::ops::softmax_last_dim(&att)?;
                let o = att.matmul(&v_all)?; // [kv_heads, groups*t, hd]
                let o = o
                    .reshape((nh, t, hd))?
                    .transpose(0, 1)?
                    .reshape((t, nh * hd))?;
                debug_assert_eq!(k_all.dim(1)?, total);
                outs.push(o);
                off += t;
            }
            let attn = if outs.len() == 1 {
                outs.pop().unwrap_or_else(|| unreachable!("len checked"))
            } else {
                Tensor::cat(&outs, 0)?
            };
            x = (x + layer.wo.forward(&attn, &runs)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate = candle_nn::ops::silu(&layer.gate.forward(&h, &runs)?)?;
            let up = layer.up.forward(&h, &runs)?;
            x = (x + layer.down.forward(&(gate * up)?, &runs)?)?;
            if let Some(t) = trace.as_deref_mut() {
                t.push(x.clone());
            }
        }
        let last = Tensor::from_vec(last_rows, seqs.len(), &self.device)?;
        let x = x.index_select(&last, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        self.output.forward(&x)
    }
}

/// A GGUF file's header read, with the model config and tokenizer it describes.
pub(crate) struct OpenGguf {
    pub file: std::fs::File,
    pub content: Content,
    pub config: LmConfig,
    pub tokenizer: LmTokenizer,
}

impl OpenGguf {
    pub fn read(path: &Path) -> Result<Self, LlmError> {
        let gguf_err = |source| LlmError::Gguf {
            path: path.to_owned(),
            source,
        };
        let mut file =
            std::fs::File::open(path).map_err(|e| gguf_err(candle_core::Error::Io(e)))?;
        let content = Content::read(&mut file).map_err(gguf_err)?;
        let config = LmConfig::from_gguf(&content)?;
        let tokenizer = LmTokenizer::from_gguf(&content)?;
        Ok(Self {
            file,
            content,
            config,
            tokenizer,
        })
    }
}

/// What every model checks before a step: each sequence brings a token, stays within
/// `max_positions`, and uses only ids of the vocabulary. Returns the step's token count.
pub(crate) fn check_step(
    seqs: &[StepSeq<'_>],
    max_positions: usize,
    vocab: usize,
) -> Result<usize, LlmError> {
    let n: usize = seqs.iter().map(|s| s.tokens.len()).sum();
    if n == 0 || seqs.iter().any(|s| s.tokens.is_empty()) {
        return Err(LlmError::Model(candle_core::Error::Msg(
            "every sequence in a step needs at least one token".into(),
        )));
    }
    for s in seqs {
        let end = s.kv.len() + s.tokens.len();
        if end > max_positions {
            return Err(LlmError::ContextOverflow {
                tokens: end,
                limit: max_positions,
            });
        }
        if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(LlmError::Tokenizer(format!(
                "token id {bad} outside the vocabulary"
            )));
        }
    }
    Ok(n)
}

/// Additive causal mask for `t` new tokens after `past` cached ones, repeated for `groups`
/// stacked query heads: `[groups*t, past+t]`.
fn causal_mask(groups: usize, t: usize, past: usize, dev: &Device) -> CResult<Tensor> {
    let total = past + t;
    let mut m = Vec::with_capacity(groups * t * total);
    for _ in 0..groups {
        for j in 0..t {
            for key in 0..total {
                m.push(if key <= past + j {
                    0.0f32
                } else {
                    f32::NEG_INFINITY
                });
            }
        }
    }
    Tensor::from_vec(m, (groups * t, total), dev)
}

fn rope_tables(
    head_dim: usize,
    base: f32,
    max_pos: usize,
    dev: &Device,
) -> Result<(Tensor, Tensor), LlmError> {
    let half = head_dim / 2;
    // The same tables the GPU model uploads (one definition for both).
    let (cos, sin) = antiphon_kernels::llm_ref::rope_tables(head_dim, base, max_pos);
    Ok((
        Tensor::from_vec(cos, (max_pos, half), dev)?,
        Tensor::from_vec(sin, (max_pos, half), dev)?,
    ))
}
