//! Moonshine base-en (encoder-decoder speech recogniser) on onnxruntime, batched.
//!
//! The encoder turns 16 kHz audio into hidden states (no fixed 30 s window: cost grows with the
//! audio). The merged decoder runs once without cache (prefill: BOS plus any forced prefix) and
//! then one token per step with its self-attention cache; the cross-attention keys/values made
//! by the first call are reused by every later step.
//!
//! Batching: rows of one batch must have the same audio length, so [`Moonshine::transcribe`]
//! pads shorter rows with trailing silence (the engine only groups utterances of similar
//! length, keeping that padding small). All rows step together; a row that has finished keeps
//! being fed EOS until the longest row is done.

use std::borrow::Cow;
use std::path::Path;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use crate::onnx::{self, OnnxError};
use crate::store::ModelStore;

pub const MOONSHINE_MODEL: &str = "moonshine-base-en";
pub const ENCODER_FILE: &str = "encoder_model.ort";
pub const DECODER_FILE: &str = "decoder_model_merged.ort";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Audio rate the model expects.
pub const SAMPLE_RATE: u32 = 16_000;
const BOS: u32 = 1;
const EOS: u32 = 2;
const LAYERS: usize = 8;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 52;
/// Upstream's generation limit: tokens per second of audio.
pub const TOKENS_PER_SECOND: f32 = 6.5;
/// Shortest audio the encoder accepts (its convolutions need a few hundred samples).
pub const MIN_SAMPLES: usize = SAMPLE_RATE as usize / 10;

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("cannot load the tokenizer {path}: {message}")]
    Tokenizer { path: String, message: String },
    #[error("moonshine {stage} failed: {message}")]
    Run {
        stage: &'static str,
        message: String,
    },
    #[error("cannot decode tokens to text: {0}")]
    Detokenize(String),
}

fn run_err(stage: &'static str) -> impl Fn(ort::Error) -> AsrError {
    move |e| AsrError::Run {
        stage,
        message: e.to_string(),
    }
}

/// One row of a batch: the audio of an utterance and the tokens it must start with.
#[derive(Debug, Clone, Copy)]
pub struct DecodeRow<'a> {
    /// 16 kHz mono samples.
    pub audio: &'a [f32],
    /// Tokens (after BOS) taken as given: the stable prefix of earlier decodes.
    pub forced: &'a [u32],
}

/// Where a batch spent its time, for benchmarks and latency traces.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeTiming {
    pub encoder: std::time::Duration,
    pub decoder: std::time::Duration,
    pub decoder_steps: usize,
}

/// The loaded model and tokenizer.
pub struct Moonshine {
    encoder: Session,
    decoder: Session,
    tokenizer: tokenizers::Tokenizer,
    /// Decoder input names of the self-attention and cross-attention caches, in order.
    past_self: Vec<(String, String)>,
    past_cross: Vec<(String, String)>,
}

impl Moonshine {
    pub fn load(store: &ModelStore, threads: usize) -> Result<Self, AsrError> {
        let env = onnx::environment(store)?;
        let file = |f: &str| store.file(MOONSHINE_MODEL, f).map_err(OnnxError::from);
        let encoder = Self::unpacked_session(&env, &file(ENCODER_FILE)?, threads)?;
        let decoder = Self::unpacked_session(&env, &file(DECODER_FILE)?, threads)?;
        Self::new(encoder, decoder, &file(TOKENIZER_FILE)?)
    }

    fn new(encoder: Session, decoder: Session, tokenizer: &Path) -> Result<Self, AsrError> {
        let tokenizer =
            tokenizers::Tokenizer::from_file(tokenizer).map_err(|e| AsrError::Tokenizer {
                path: tokenizer.display().to_string(),
                message: e.to_string(),
            })?;
        let names = |kind: &str| {
            (0..LAYERS)
                .map(|l| {
                    (
                        format!("past_key_values.{l}.{kind}.key"),
                        format!("past_key_values.{l}.{kind}.value"),
                    )
                })
                .collect()
        };
        Ok(Self {
            encoder,
            decoder,
            tokenizer,
            past_self: names("decoder"),
            past_cross: names("encoder"),
        })
    }

    /// A model converted to ONNX so onnxruntime folds its weight dequantisation once (see
    /// `unpack`). Set `ANTIPHON_MOONSHINE_ORT=1` to run the ORT-format file as shipped instead
    /// (for comparison: about ten times slower per decoder step here).
    fn unpacked_session(
        env: &ort::environment::Environment,
        path: &Path,
        threads: usize,
    ) -> Result<Session, AsrError> {
        use ort::session::builder::GraphOptimizationLevel;
        if std::env::var_os("ANTIPHON_MOONSHINE_ORT").is_some() {
            return Ok(onnx::session(env, path, threads)?);
        }
        let bytes = super::unpack::ort_to_onnx(env, path).map_err(|e| AsrError::Run {
            stage: "decoder conversion",
            message: e.to_string(),
        })?;
        let err = |message: String| AsrError::Run {
            stage: "decoder load",
            message,
        };
        Session::builder(env)
            .map_err(|e| err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.to_string()))?
            .with_intra_op_spinning(false)
            .map_err(|e| err(e.to_string()))?
            .commit_from_memory(&bytes)
            .map_err(|e| err(e.to_string()))
    }

    /// Most tokens worth generating for `samples` of audio.
    pub fn max_tokens(samples: usize) -> usize {
        ((samples as f32 / SAMPLE_RATE as f32) * TOKENS_PER_SECOND).ceil() as usize + 1
    }

    /// Greedy transcription of every row as one batch. Returns each row's tokens (forced
    /// prefix included, BOS and EOS excluded).
    pub fn transcribe(
        &mut self,
        rows: &[DecodeRow<'_>],
    ) -> Result<(Vec<Vec<u32>>, DecodeTiming), AsrError> {
        let mut timing = DecodeTiming::default();
        if rows.is_empty() {
            return Ok((Vec::new(), timing));
        }
        let batch = rows.len();
        let samples = rows
            .iter()
            .map(|r| r.audio.len())
            .max()
            .unwrap_or(0)
            .max(MIN_SAMPLES);
        let started = std::time::Instant::now();
        let hidden = self.encode(rows, samples)?;
        timing.encoder = started.elapsed();

        let started = std::time::Instant::now();
        let max_tokens = Self::max_tokens(samples);
        // Prefill BOS plus the part of the forced prefixes all rows have (capped so each row
        // still predicts at least one token itself).
        let common = rows
            .iter()
            .map(|r| r.forced.len().min(max_tokens.saturating_sub(1)))
            .min()
            .unwrap_or(0);
        let mut seqs: Vec<Vec<u32>> = rows.iter().map(|r| r.forced[..common].to_vec()).collect();
        let mut done = vec![false; batch];
        let mut ids: Vec<i64> = Vec::with_capacity(batch * (common + 1));
        for row in &seqs {
            ids.push(i64::from(BOS));
            ids.extend(row.iter().map(|&t| i64::from(t)));
        }
        let mut step_len = common + 1;
        let mut past_self: Vec<DynValue> = Vec::new();
        let mut past_cross: Vec<DynValue> = Vec::new();
        loop {
            let input_ids =
                Tensor::from_array(([batch, step_len], ids)).map_err(run_err("decoder input"))?;
            let logits;
            {
                let first = past_self.is_empty();
                let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
                    ("input_ids".into(), input_ids.into()),
                    ("encoder_hidden_states".into(), (&hidden).into()),
                    (
                        "use_cache_branch".into(),
                        Tensor::from_array(([1usize], vec![!first]))
                            .map_err(run_err("decoder input"))?
                            .into(),
                    ),
                ];
                if first {
                    for (k, v) in self.past_self.iter().chain(&self.past_cross) {
                        for name in [k, v] {
                            let empty = Tensor::from_array((
                                [batch, KV_HEADS, 0, HEAD_DIM],
                                Vec::<f32>::new(),
                            ))
                            .map_err(run_err("decoder input"))?;
                            inputs.push((name.as_str().into(), empty.into()));
                        }
                    }
                } else {
                    let names = self.past_self.iter().flat_map(|(k, v)| [k, v]);
                    for (name, value) in names.zip(past_self.drain(..)) {
                        inputs.push((name.as_str().into(), value.into()));
                    }
                    let names = self.past_cross.iter().flat_map(|(k, v)| [k, v]);
                    for (name, value) in names.zip(&past_cross) {
                        inputs.push((name.as_str().into(), value.into()));
                    }
                }
                let mut outputs = self.decoder.run(inputs).map_err(run_err("decoder"))?;
                let take = |outputs: &mut ort::session::SessionOutputs<'_>, name: String| {
                    outputs.remove(&name).ok_or_else(|| AsrError::Run {
                        stage: "decoder",
                        message: format!("no output {name}"),
                    })
                };
                for l in 0..LAYERS {
                    past_self.push(take(&mut outputs, format!("present.{l}.decoder.key"))?);
                    past_self.push(take(&mut outputs, format!("present.{l}.decoder.value"))?);
                }
                if first {
                    for l in 0..LAYERS {
                        past_cross.push(take(&mut outputs, format!("present.{l}.encoder.key"))?);
                        past_cross.push(take(&mut outputs, format!("present.{l}.encoder.value"))?);
                    }
                }
                logits = take(&mut outputs, "logits".to_owned())?;
            }
            timing.decoder_steps += 1;
            let (shape, values) = logits
                .try_extract_tensor::<f32>()
                .map_err(run_err("decoder output"))?;
            let vocab = usize::try_from(shape[2]).unwrap_or(0);
            if shape.len() != 3 || vocab == 0 || values.len() != batch * step_len * vocab {
                return Err(AsrError::Run {
                    stage: "decoder output",
                    message: format!("unexpected logits shape {shape:?}"),
                });
            }
            ids = Vec::with_capacity(batch);
            for (b, row) in rows.iter().enumerate() {
                let next = if done[b] {
                    EOS
                } else if seqs[b].len() < row.forced.len() {
                    row.forced[seqs[b].len()]
                } else {
                    let start = (b * step_len + step_len - 1) * vocab;
                    argmax(&values[start..start + vocab])
                };
                if !done[b] {
                    if next == EOS {
                        done[b] = true;
                    } else {
                        seqs[b].push(next);
                        if seqs[b].len() >= max_tokens.max(row.forced.len() + 1) {
                            done[b] = true;
                        }
                    }
                }
                ids.push(i64::from(next));
            }
            step_len = 1;
            if done.iter().all(|&d| d) {
                break;
            }
        }
        timing.decoder = started.elapsed();
        Ok((seqs, timing))
    }

    /// Runs the encoder on every row, padded with silence to `samples`.
    fn encode(&mut self, rows: &[DecodeRow<'_>], samples: usize) -> Result<DynValue, AsrError> {
        let mut audio = Vec::with_capacity(rows.len() * samples);
        for row in rows {
            audio.extend_from_slice(row.audio);
            audio.resize(audio.len() + samples - row.audio.len(), 0.0);
        }
        let input =
            Tensor::from_array(([rows.len(), samples], audio)).map_err(run_err("encoder input"))?;
        let mut outputs = self
            .encoder
            .run(ort::inputs!["input_values" => input])
            .map_err(run_err("encoder"))?;
        outputs
            .remove("last_hidden_state")
            .ok_or_else(|| AsrError::Run {
                stage: "encoder",
                message: "no output last_hidden_state".to_owned(),
            })
    }

    /// Text of `tokens` (special tokens skipped).
    pub fn detokenize(&self, tokens: &[u32]) -> Result<String, AsrError> {
        self.tokenizer
            .decode(tokens, true)
            .map(|t| t.trim().to_owned())
            .map_err(|e| AsrError::Detokenize(e.to_string()))
    }
}

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}
