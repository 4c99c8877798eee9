//! Byte-level BPE built from the GGUF vocabulary and merges.
//!
//! Encoding uses the `tokenizers` crate (BPE model + the pre-tokenizer regex the GGUF names in
//! `tokenizer.ggml.pre`). Decoding is our own table from token id to raw bytes, so a stream of
//! tokens can be turned into UTF-8 text piece by piece ([`StreamDecoder`]) without re-decoding.
//! Control tokens (`<|im_start|>` …) are never produced by [`LmTokenizer::encode`]: chat markup
//! is inserted by id in [`super::chat`], so user text cannot inject it.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Content;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::LlmError;
use super::gguf::{get_ints, get_string, get_strings};

/// Qwen2's pre-tokenizer split (as its tokenizer config states it).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama-3 style split (GGUF pre `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token type for control tokens.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF token type for user-defined tokens (stored as literal text, not byte-level).
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

pub struct LmTokenizer {
    bpe: Tokenizer,
    /// Raw bytes each token stands for; empty for control tokens.
    token_bytes: Vec<Vec<u8>>,
    by_text: HashMap<String, u32>,
}

impl std::fmt::Debug for LmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmTokenizer")
            .field("vocab", &self.token_bytes.len())
            .finish()
    }
}

/// GPT-2's reversible byte -> printable char map, inverted (char -> byte).
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0u32..256 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        // Every value here is < 256 + 256, a valid scalar value.
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, b as u8);
        }
    }
    map
}

impl LmTokenizer {
    pub fn from_gguf(content: &Content) -> Result<Self, LlmError> {
        let md = &content.metadata;
        let model = get_string(md, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(LlmError::Tokenizer(format!(
                "tokenizer model `{model}` is not supported (byte-level BPE `gpt2` is)"
            )));
        }
        let tokens = get_strings(md, "tokenizer.ggml.tokens")?;
        let types = get_ints(md, "tokenizer.ggml.token_type")?;
        let merges = get_strings(md, "tokenizer.ggml.merges")?;
        let pre = get_string(md, "tokenizer.ggml.pre").unwrap_or("gpt2");

        let to_byte = unicode_to_byte();
        let mut token_bytes = Vec::with_capacity(tokens.len());
        let mut by_text = HashMap::with_capacity(tokens.len());
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for (id, tok) in tokens.iter().enumerate() {
            let id32 =
                u32::try_from(id).map_err(|_| LlmError::Tokenizer("vocab too big".into()))?;
            let ty = types.get(id).copied().unwrap_or(1);
            let bytes = match ty {
                TOKEN_TYPE_CONTROL => Vec::new(),
                TOKEN_TYPE_USER_DEFINED => tok.as_bytes().to_vec(),
                _ => tok
                    .chars()
                    .map(|c| to_byte.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| tok.as_bytes().to_vec()),
            };
            token_bytes.push(bytes);
            by_text.insert((*tok).to_owned(), id32);
            if ty != TOKEN_TYPE_CONTROL {
                vocab.insert((*tok).to_owned(), id32);
            }
        }
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| LlmError::Tokenizer(format!("bad merge `{m}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;

        let byte_level_plain: PreTokenizerWrapper = ByteLevel::new(false, false, false).into();
        let split = |re: &str| -> Result<PreTokenizerWrapper, LlmError> {
            Ok(Split::new(
                SplitPattern::Regex(re.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?
            .into())
        };
        let pre_tokenizer = match pre {
            "qwen2" => Sequence::new(vec![split(QWEN2_SPLIT)?, byte_level_plain]),
            "llama-bpe" | "llama3" => Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level_plain]),
            // SmolLM / StarCoder: single digits, then GPT-2's own split.
            "smollm" | "starcoder" | "refact" => Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, false, true).into(),
            ]),
            _ => Sequence::new(vec![ByteLevel::new(false, false, true).into()]),
        };
        let mut tok = Tokenizer::new(bpe);
        tok.with_pre_tokenizer(Some(pre_tokenizer));
        Ok(Self {
            bpe: tok,
            token_bytes,
            by_text,
        })
    }

    /// Plain text to token ids (no special tokens, no BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let enc = self
            .bpe
            .encode_fast(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Id of a token by its exact vocabulary text (e.g. `<|im_start|>`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    /// The bytes a token stands for (empty for control tokens and out-of-range ids).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Token ids back to text (lossy on invalid UTF-8).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Turns a stream of tokens into UTF-8 pieces, holding back bytes of an unfinished character.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Text completed by this token (may be empty while a multi-byte character is split).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_owned();
                self.pending.clear();
                out
            }
            Err(e) if e.error_len().is_none() => {
                // An incomplete character at the end: emit the valid part, keep the tail.
                let valid = e.valid_up_to();
                let out = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
                self.pending.drain(..valid);
                out
            }
            Err(_) => {
                let out = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                out
            }
        }
    }
}
