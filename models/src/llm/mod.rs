//! Chat LLMs: a GGUF llama/qwen2 engine with continuous batching and per-session prefix caches,
//! and an OpenAI-compatible streaming client, both behind [`ChatBackend`].
//!
//! Layout (candle's one-folder-per-model style):
//! - [`gguf`]: model config, tokenizer and chat template read from the GGUF metadata.
//! - [`tokenizer`]: byte-level BPE built from the GGUF vocab/merges, plus streaming detokenizing.
//! - [`chat`]: ChatML rendering of conversation turns into token ids.
//! - [`model`]: our batched llama/qwen2 forward over candle quantized matmuls.
//! - [`q8gemm`]: our 8-bit matmul (AVX-512 VNNI) that reuses each weight load across rows.
//! - [`kv`]: one sequence's KV cache (grow, truncate).
//! - [`sampling`]: greedy / temperature / top-p / repetition penalty, and stop strings.
//! - [`step`]: the one-step interface the engine drives (CPU model here, GPU model in `gpu`).
//! - [`engine`]: the decode-loop thread (slot table, prefix cache, LRU eviction, cancel).
//! - [`external`]: the same API over an OpenAI-compatible SSE endpoint.

pub mod backend;
pub mod chat;
mod decode_attention;
pub mod engine;
pub mod external;
pub mod gguf;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod kv;
pub mod model;
mod parallel;
pub mod q8gemm;
pub mod sampling;
pub mod sse;
pub mod step;
pub mod tokenizer;

pub use backend::{ChatBackend, ChatSession, FinishReason, ReplyEvent, ReplyStream};
pub use chat::ChatFormat;
pub use engine::{EngineConfig, EngineSession, LlmEngine};
pub use external::{ExternalConfig, ExternalLlm};
pub use gguf::{Arch, LmConfig};
pub use model::{LoadOptions, QuantLm, StepSeq};
pub use sampling::{Pick, SamplingParams};
pub use step::StepModel;

/// Errors from loading or running an LLM.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("cannot read GGUF file {path}: {source}")]
    Gguf {
        path: std::path::PathBuf,
        source: candle_core::Error,
    },
    #[error("GGUF metadata: {0}")]
    Metadata(String),
    #[error("unsupported model architecture `{0}` (llama and qwen2 are supported)")]
    UnsupportedArch(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model forward pass failed: {0}")]
    Model(#[from] candle_core::Error),
    #[error("the prompt has {tokens} tokens; the context limit is {limit}")]
    ContextOverflow { tokens: usize, limit: usize },
    #[error("the LLM engine is full ({0}); try again later")]
    Busy(&'static str),
    #[error("the LLM engine has stopped: {0}")]
    EngineStopped(String),
    #[error("unknown session {0}")]
    UnknownSession(u64),
    #[error("GPU: {0}")]
    Gpu(String),
    #[error("external LLM request failed: {0}")]
    External(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A chat model the store knows by a short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    pub alias: &'static str,
    /// Store model id (directory).
    pub id: &'static str,
    pub file: &'static str,
}

/// SmolLM2-135M-Instruct Q4_1 (llama arch): small, used by tests and CI.
pub const SMOLLM2: KnownModel = KnownModel {
    alias: "smollm2",
    id: "smollm2-135m",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2 arch): the default chat model.
pub const QWEN_CODER_05B: KnownModel = KnownModel {
    alias: "qwen",
    id: "qwen2.5-coder-0.5b",
    file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
};

/// Look a model up by alias (`smollm2`, `qwen`) or store id.
pub fn known_model(name: &str) -> Option<KnownModel> {
    [SMOLLM2, QWEN_CODER_05B]
        .into_iter()
        .find(|m| m.alias == name || m.id == name)
}

/// Load a known model from the store.
pub fn load_known(
    store: &crate::store::ModelStore,
    model: KnownModel,
    opts: model::LoadOptions,
) -> Result<QuantLm, LlmError> {
    let path = store.file(model.id, model.file)?;
    QuantLm::load(&path, opts)
}
