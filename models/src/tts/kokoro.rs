//! Kokoro-82M (int8 ONNX) on onnxruntime: misaki phoneme ids + a voice style in, 24 kHz out.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;

use super::kokoro_timing::{self, FrameLimits};
use super::symbols::SymbolIds;
use super::{SpeechModel, TtsError, Urgency};
use crate::onnx;
use crate::onnx::cut::{self, CutError, Dim, ElemType, TensorSpec};
use crate::store::ModelStore;

pub const KOKORO_MODEL: &str = "kokoro-82m";
pub const KOKORO_ONNX: &str = "kokoro-v1.0.int8.onnx";
pub const KOKORO_VOCAB: &str = "vocab.json";
pub const KOKORO_VOICES_MODEL: &str = "kokoro-voices";
pub const KOKORO_SAMPLE_RATE: u32 = 24_000;
pub const KOKORO_DEFAULT_VOICE: &str = "af_heart";
/// Style rows per voice file; a voice row is picked by token count, so this caps a chunk.
const STYLE_ROWS: usize = 510;
const STYLE_DIM: usize = 256;

#[derive(Debug, Deserialize)]
struct VocabFile {
    vocab: HashMap<String, i64>,
}

/// Tensor names of the pinned export (`kokoro-v1.0.int8.onnx`), used to cut it in two.
pub const TOKENS: &str = "tokens";
pub const STYLE: &str = "style";
pub const SPEED: &str = "speed";
/// The predicted frames per token, int64 [1, tokens], after rounding and clipping to >= 1.
pub const DURATIONS: &str = "/encoder/Cast_output_0";
pub const AUDIO: &str = "audio";
/// Symbols whose duration is a pause, not a sound.
const PUNCTUATION: &str = ";:,.!?¡¿—…\"«»“”()";

pub struct Kokoro {
    store: ModelStore,
    /// The model cut at its predicted durations: tokens, style, speed -> frames per token...
    durations: Session,
    /// ...and tokens, style, frames per token -> audio, so we can drop frames in between.
    decoder: Session,
    symbols: SymbolIds,
    punctuation: HashSet<i64>,
    /// Voice name -> [STYLE_ROWS * STYLE_DIM] style table, loaded on first use.
    voices: HashMap<String, Vec<f32>>,
    limits: FrameLimits,
    speed: f32,
}

impl Kokoro {
    pub fn load(store: &ModelStore, threads: usize) -> Result<Self, TtsError> {
        let model = store.file(KOKORO_MODEL, KOKORO_ONNX)?;
        let vocab_path = store.file(KOKORO_MODEL, KOKORO_VOCAB)?;
        let env = onnx::environment(store)?;
        let bad = |path: &Path, message: String| TtsError::Config {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(&model).map_err(|e| bad(&model, e.to_string()))?;
        let (front, back) = split_at_durations(&bytes).map_err(|e| {
            bad(
                &model,
                format!(
                    "cannot split the graph at {DURATIONS:?} (needs the pinned v1.0 export): {e}"
                ),
            )
        })?;
        let label = model.display().to_string();
        let durations =
            onnx::session_from_memory(&env, &format!("{label} (durations)"), &front, threads)?;
        let decoder =
            onnx::session_from_memory(&env, &format!("{label} (decoder)"), &back, threads)?;
        let text =
            std::fs::read_to_string(&vocab_path).map_err(|e| bad(&vocab_path, e.to_string()))?;
        let vocab: VocabFile =
            serde_json::from_str(&text).map_err(|e| bad(&vocab_path, e.to_string()))?;
        let ids: HashMap<char, i64> = vocab
            .vocab
            .into_iter()
            .filter_map(|(s, id)| {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some((c, id)),
                    _ => None,
                }
            })
            .collect();
        let punctuation = PUNCTUATION
            .chars()
            .filter_map(|c| ids.get(&c).copied())
            .collect();
        Ok(Self {
            store: store.clone(),
            durations,
            decoder,
            symbols: SymbolIds::new(ids),
            punctuation,
            voices: HashMap::new(),
            limits: FrameLimits::default(),
            speed: 1.0,
        })
    }

    /// The caps on non-speech frames for a reply's first chunk (benchmarks compare them).
    pub fn set_frame_limits(&mut self, limits: FrameLimits) {
        self.limits = limits;
    }

    fn style_table(&mut self, voice: &str) -> Result<&[f32], TtsError> {
        if !self.voices.contains_key(voice) {
            if !voice.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || voice.is_empty() {
                return Err(TtsError::UnknownVoice(voice.to_owned()));
            }
            let path = self
                .store
                .file(KOKORO_VOICES_MODEL, &format!("{voice}.bin"))
                .map_err(|_| TtsError::UnknownVoice(voice.to_owned()))?;
            let bytes = std::fs::read(&path).map_err(|e| TtsError::Config {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            if bytes.len() != STYLE_ROWS * STYLE_DIM * 4 {
                return Err(TtsError::Config {
                    path: path.display().to_string(),
                    message: format!(
                        "expected {} bytes of f32 styles, found {}",
                        STYLE_ROWS * STYLE_DIM * 4,
                        bytes.len()
                    ),
                });
            }
            let table = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            self.voices.insert(voice.to_owned(), table);
        }
        Ok(&self.voices[voice])
    }

    fn run(
        &mut self,
        ids: Vec<i64>,
        voice: &str,
        limits: FrameLimits,
    ) -> Result<Vec<f32>, TtsError> {
        let row = ids.len().min(STYLE_ROWS - 1);
        let style = self.style_table(voice)?[row * STYLE_DIM..(row + 1) * STYLE_DIM].to_vec();
        let ends_in_punctuation = ids.last().is_some_and(|id| self.punctuation.contains(id));
        // Both pads, though the model gives the leading one 14-20 frames of silence: without it
        // the first word is swallowed ("Turn left" heard as "Left"; the round-trip WER failed),
        // and any other leading symbol costs the same. Its frames are capped instead
        // (`kokoro_timing`), which keeps the onset. docs/TTS.md.
        let mut tokens = Vec::with_capacity(ids.len() + 2);
        tokens.push(0);
        tokens.extend(ids);
        tokens.push(0);
        let err = |e: ort::Error| TtsError::Inference(e.to_string());
        let len = tokens.len();
        let tokens = Tensor::from_array(([1usize, len], tokens)).map_err(err)?;
        let style = Tensor::from_array(([1usize, STYLE_DIM], style)).map_err(err)?;
        let speed = Tensor::from_array(([1usize], vec![self.speed])).map_err(err)?;
        let predicted = self
            .durations
            .run(ort::inputs![TOKENS => &tokens, STYLE => &style, SPEED => speed])
            .map_err(err)?;
        let (_, frames) = predicted[DURATIONS]
            .try_extract_tensor::<i64>()
            .map_err(err)?;
        let mut frames = frames.to_vec();
        if frames.len() != len {
            return Err(TtsError::Inference(format!(
                "the duration predictor returned {} values for {len} tokens",
                frames.len()
            )));
        }
        drop(predicted);
        kokoro_timing::tighten(&mut frames, ends_in_punctuation, limits);
        let frames = Tensor::from_array(([1usize, len], frames)).map_err(err)?;
        let outputs = self
            .decoder
            .run(ort::inputs![TOKENS => tokens, STYLE => style, DURATIONS => frames])
            .map_err(err)?;
        let (_, audio) = outputs[AUDIO].try_extract_tensor::<f32>().map_err(err)?;
        Ok(audio.to_vec())
    }
}

/// Cuts the model at its predicted durations: (tokens, style, speed -> durations) and
/// (tokens, style, durations -> audio). Fed the predicted durations unchanged, the pair
/// computes exactly what the whole model does (test `kokoro_split_equals_whole_model`).
pub fn split_at_durations(model: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CutError> {
    let per_token = [Dim::Fixed(1), Dim::Named("sequence_length")];
    let durations = TensorSpec {
        name: DURATIONS,
        elem_type: ElemType::Int64,
        dims: &per_token,
    };
    let audio = TensorSpec {
        name: AUDIO,
        elem_type: ElemType::Float,
        dims: &[Dim::Named("audio_length")],
    };
    let front = cut::sub_model(model, &[], &[durations])?;
    let back = cut::sub_model(model, &[durations], &[audio])?;
    Ok((front, back))
}

impl SpeechModel for Kokoro {
    fn sample_rate(&self) -> u32 {
        KOKORO_SAMPLE_RATE
    }

    fn voices(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.store.model_dir(KOKORO_VOICES_MODEL))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_suffix(".bin")
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn synthesize(
        &mut self,
        phonemes: &str,
        voice: &str,
        urgency: Urgency,
    ) -> Result<Vec<f32>, TtsError> {
        let limits = match urgency {
            Urgency::FirstAudio => self.limits,
            Urgency::Ahead => FrameLimits::UNCHANGED,
        };
        let (ids, _unknown) = self.symbols.encode(phonemes);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The model takes at most STYLE_ROWS - 2 ids; longer text is cut at word boundaries.
        let mut audio = Vec::new();
        let mut piece: Vec<i64> = Vec::new();
        let space = self.symbols.get(' ');
        let max = STYLE_ROWS - 2;
        let mut last_space = None;
        for id in ids {
            if Some(id) == space {
                last_space = Some(piece.len());
            }
            piece.push(id);
            if piece.len() == max {
                let cut = last_space.filter(|&c| c > 0).unwrap_or(max);
                let rest = piece.split_off(cut);
                audio.extend(self.run(std::mem::replace(&mut piece, rest), voice, limits)?);
                last_space = None;
            }
        }
        if !piece.is_empty() {
            audio.extend(self.run(piece, voice, limits)?);
        }
        Ok(audio)
    }
}
