//! Kokoro-82M (int8 ONNX) on onnxruntime: misaki phoneme ids + a voice style in, 24 kHz out.

use std::collections::HashMap;
use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;

use super::symbols::SymbolIds;
use super::{SpeechModel, TtsError};
use crate::onnx;
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

pub struct Kokoro {
    store: ModelStore,
    session: Session,
    symbols: SymbolIds,
    /// Voice name -> [STYLE_ROWS * STYLE_DIM] style table, loaded on first use.
    voices: HashMap<String, Vec<f32>>,
    input_names: [String; 3],
    output: String,
    speed: f32,
}

impl Kokoro {
    pub fn load(store: &ModelStore, threads: usize) -> Result<Self, TtsError> {
        let model = store.file(KOKORO_MODEL, KOKORO_ONNX)?;
        let vocab_path = store.file(KOKORO_MODEL, KOKORO_VOCAB)?;
        let env = onnx::environment(store)?;
        let session = onnx::session(&env, &model, threads)?;
        let bad = |path: &Path, message: String| TtsError::Config {
            path: path.display().to_string(),
            message,
        };
        let text =
            std::fs::read_to_string(&vocab_path).map_err(|e| bad(&vocab_path, e.to_string()))?;
        let vocab: VocabFile =
            serde_json::from_str(&text).map_err(|e| bad(&vocab_path, e.to_string()))?;
        let ids = vocab
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
        // Inputs are (tokens, style, speed) in that order whatever the export named them.
        let names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_owned())
            .collect();
        let find = |want: &[&str]| {
            names
                .iter()
                .find(|n| want.contains(&n.as_str()))
                .cloned()
                .ok_or_else(|| bad(&model, format!("no input named {want:?} among {names:?}")))
        };
        let input_names = [
            find(&["tokens", "input_ids"])?,
            find(&["style", "ref_s"])?,
            find(&["speed"])?,
        ];
        let output = session
            .outputs()
            .first()
            .ok_or_else(|| bad(&model, "model has no output".into()))?
            .name()
            .to_owned();
        Ok(Self {
            store: store.clone(),
            session,
            symbols: SymbolIds::new(ids),
            voices: HashMap::new(),
            input_names,
            output,
            speed: 1.0,
        })
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

    fn run(&mut self, ids: Vec<i64>, voice: &str) -> Result<Vec<f32>, TtsError> {
        let row = ids.len().min(STYLE_ROWS - 1);
        let style = self.style_table(voice)?[row * STYLE_DIM..(row + 1) * STYLE_DIM].to_vec();
        // Both pads, though the model makes ~0.37 s of silence for the leading one (its
        // compute is proportional to the audio, so that is ~40 % of a one-word chunk's cost):
        // without it the first word is swallowed ("Turn left" heard as "Left"; the round-trip
        // WER failed), and any other leading symbol costs the same silence. docs/TTS.md.
        let mut tokens = Vec::with_capacity(ids.len() + 2);
        tokens.push(0);
        tokens.extend(ids);
        tokens.push(0);
        let err = |e: ort::Error| TtsError::Inference(e.to_string());
        let len = tokens.len();
        let tokens = Tensor::from_array(([1usize, len], tokens)).map_err(err)?;
        let style = Tensor::from_array(([1usize, STYLE_DIM], style)).map_err(err)?;
        let speed = Tensor::from_array(([1usize], vec![self.speed])).map_err(err)?;
        let [t, s, v] = &self.input_names;
        let outputs = self
            .session
            .run(ort::inputs![t.as_str() => tokens, s.as_str() => style, v.as_str() => speed])
            .map_err(err)?;
        let (_, audio) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        Ok(audio.to_vec())
    }
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

    fn synthesize(&mut self, phonemes: &str, voice: &str) -> Result<Vec<f32>, TtsError> {
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
                audio.extend(self.run(std::mem::replace(&mut piece, rest), voice)?);
                last_space = None;
            }
        }
        if !piece.is_empty() {
            audio.extend(self.run(piece, voice)?);
        }
        Ok(audio)
    }
}
