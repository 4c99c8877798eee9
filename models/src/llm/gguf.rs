//! What a GGUF file's metadata says about the model: shape, RoPE, special tokens, template.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};

use super::LlmError;

/// The two decoder families we run. They differ in RoPE pairing and attention biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// llama.cpp stores llama q/k weights permuted for interleaved (adjacent-pair) RoPE.
    Llama,
    /// qwen2 uses half-split ("neox") RoPE and has q/k/v biases.
    Qwen2,
}

/// Model hyper-parameters from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct LmConfig {
    pub arch: Arch,
    pub name: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
    pub context_length: usize,
    pub vocab_size: usize,
    pub eos_token: u32,
    pub chat_template: String,
}

fn get<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value, LlmError> {
    md.get(key)
        .ok_or_else(|| LlmError::Metadata(format!("missing key {key}")))
}

fn get_usize(md: &HashMap<String, Value>, key: &str) -> Result<usize, LlmError> {
    let v = get(md, key)?;
    let n = match v {
        Value::U8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I32(x) if *x >= 0 => *x as u64,
        Value::I64(x) if *x >= 0 => *x as u64,
        other => {
            return Err(LlmError::Metadata(format!(
                "{key} is not an unsigned integer: {other:?}"
            )));
        }
    };
    usize::try_from(n).map_err(|_| LlmError::Metadata(format!("{key} too large")))
}

fn get_f32(md: &HashMap<String, Value>, key: &str) -> Result<f32, LlmError> {
    match get(md, key)? {
        Value::F32(x) => Ok(*x),
        Value::F64(x) => Ok(*x as f32),
        other => Err(LlmError::Metadata(format!(
            "{key} is not a float: {other:?}"
        ))),
    }
}

/// A string-array metadata value (tokens, merges).
pub(crate) fn get_strings<'a>(
    md: &'a HashMap<String, Value>,
    key: &str,
) -> Result<Vec<&'a str>, LlmError> {
    let Value::Array(items) = get(md, key)? else {
        return Err(LlmError::Metadata(format!("{key} is not an array")));
    };
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            other => Err(LlmError::Metadata(format!(
                "{key} holds a non-string: {other:?}"
            ))),
        })
        .collect()
}

/// An integer-array metadata value (token types).
pub(crate) fn get_ints(md: &HashMap<String, Value>, key: &str) -> Result<Vec<i64>, LlmError> {
    let Value::Array(items) = get(md, key)? else {
        return Err(LlmError::Metadata(format!("{key} is not an array")));
    };
    items
        .iter()
        .map(|v| match v {
            Value::I32(x) => Ok(*x as i64),
            Value::U32(x) => Ok(*x as i64),
            Value::I64(x) => Ok(*x),
            Value::U8(x) => Ok(*x as i64),
            other => Err(LlmError::Metadata(format!(
                "{key} holds a non-integer: {other:?}"
            ))),
        })
        .collect()
}

pub(crate) fn get_string<'a>(
    md: &'a HashMap<String, Value>,
    key: &str,
) -> Result<&'a str, LlmError> {
    match get(md, key)? {
        Value::String(s) => Ok(s),
        other => Err(LlmError::Metadata(format!(
            "{key} is not a string: {other:?}"
        ))),
    }
}

impl LmConfig {
    pub fn from_gguf(content: &Content) -> Result<Self, LlmError> {
        let md = &content.metadata;
        let arch_name = get_string(md, "general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => return Err(LlmError::UnsupportedArch(other.to_owned())),
        };
        let p = |k: &str| format!("{arch_name}.{k}");
        let hidden = get_usize(md, &p("embedding_length"))?;
        let n_heads = get_usize(md, &p("attention.head_count"))?;
        let n_kv_heads = get_usize(md, &p("attention.head_count_kv"))?;
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || hidden % n_heads != 0 {
            return Err(LlmError::Metadata(format!(
                "inconsistent heads: hidden {hidden}, heads {n_heads}, kv heads {n_kv_heads}"
            )));
        }
        let head_dim = match get_usize(md, &p("rope.dimension_count")) {
            Ok(d) => d,
            Err(_) => hidden / n_heads,
        };
        if head_dim != hidden / n_heads {
            return Err(LlmError::Metadata(format!(
                "partial RoPE (dimension_count {head_dim}) is not supported"
            )));
        }
        let vocab_size = get_strings(md, "tokenizer.ggml.tokens")?.len();
        let eos = get_usize(md, "tokenizer.ggml.eos_token_id")?;
        Ok(Self {
            arch,
            name: get_string(md, "general.name")
                .unwrap_or("unnamed")
                .to_owned(),
            n_layers: get_usize(md, &p("block_count"))?,
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn: get_usize(md, &p("feed_forward_length"))?,
            rms_eps: get_f32(md, &p("attention.layer_norm_rms_epsilon"))? as f64,
            rope_base: get_f32(md, &p("rope.freq_base")).unwrap_or(10_000.0),
            context_length: get_usize(md, &p("context_length"))?,
            vocab_size,
            eos_token: u32::try_from(eos)
                .map_err(|_| LlmError::Metadata("eos token id too large".into()))?,
            chat_template: get_string(md, "tokenizer.chat_template")?.to_owned(),
        })
    }
}
