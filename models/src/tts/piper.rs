//! Piper (VITS) voices on onnxruntime: espeak-style IPA ids in, 22.05 kHz audio out.

use std::collections::HashMap;
use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;

use super::symbols::{SymbolIds, misaki_to_espeak};
use super::{SpeechModel, TtsError, Urgency};
use crate::onnx;
use crate::store::ModelStore;

pub const PIPER_JOE_MODEL: &str = "piper-joe";
pub const PIPER_JOE_ONNX: &str = "en_US-joe-medium.onnx";
pub const PIPER_JOE_CONFIG: &str = "en_US-joe-medium.onnx.json";
/// The name sessions use to pick this voice.
pub const PIPER_JOE_VOICE: &str = "joe";

#[derive(Debug, Deserialize)]
struct PiperConfig {
    audio: AudioConfig,
    inference: InferenceConfig,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(Debug, Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Debug, Deserialize)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

pub struct Piper {
    session: Session,
    voice: String,
    sample_rate: u32,
    scales: [f32; 3],
    symbols: SymbolIds,
    has_speaker_input: bool,
    output: String,
    pad: i64,
    bos: i64,
    eos: i64,
}

impl Piper {
    /// The `joe` voice from the store, with `threads` intra-op threads.
    pub fn joe(store: &ModelStore, threads: usize) -> Result<Self, TtsError> {
        let model = store.file(PIPER_JOE_MODEL, PIPER_JOE_ONNX)?;
        let config = store.file(PIPER_JOE_MODEL, PIPER_JOE_CONFIG)?;
        let env = onnx::environment(store)?;
        let session = onnx::session(&env, &model, threads)?;
        Self::new(session, &config, PIPER_JOE_VOICE)
    }

    fn new(session: Session, config_path: &Path, voice: &str) -> Result<Self, TtsError> {
        let bad = |message: String| TtsError::Config {
            path: config_path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(config_path).map_err(|e| bad(e.to_string()))?;
        let config: PiperConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut ids = HashMap::new();
        for (symbol, id) in &config.phoneme_id_map {
            let mut chars = symbol.chars();
            if let (Some(c), None, Some(&id)) = (chars.next(), chars.next(), id.first()) {
                ids.insert(c, id);
            }
        }
        let symbols = SymbolIds::new(ids);
        let special = |c: char| {
            symbols
                .get(c)
                .ok_or_else(|| bad(format!("no id for {c:?}")))
        };
        let (pad, bos, eos) = (special('_')?, special('^')?, special('$')?);
        let has_speaker_input = session.inputs().iter().any(|i| i.name() == "sid");
        let output = session
            .outputs()
            .first()
            .ok_or_else(|| bad("model has no output".into()))?
            .name()
            .to_owned();
        Ok(Self {
            session,
            voice: voice.to_owned(),
            sample_rate: config.audio.sample_rate,
            scales: [
                config.inference.noise_scale,
                config.inference.length_scale,
                config.inference.noise_w,
            ],
            symbols,
            has_speaker_input,
            output,
            pad,
            bos,
            eos,
        })
    }

    /// Piper's id layout: BOS, then every phoneme followed by a pad, then EOS.
    fn ids(&self, phonemes: &str) -> Vec<i64> {
        let (symbols, _unknown) = self.symbols.encode(&misaki_to_espeak(phonemes));
        let mut ids = Vec::with_capacity(symbols.len() * 2 + 3);
        ids.push(self.bos);
        ids.push(self.pad);
        for id in symbols {
            ids.push(id);
            ids.push(self.pad);
        }
        ids.push(self.eos);
        ids
    }
}

impl SpeechModel for Piper {
    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn voices(&self) -> Vec<String> {
        vec![self.voice.clone()]
    }

    fn synthesize(
        &mut self,
        phonemes: &str,
        voice: &str,
        _urgency: Urgency,
    ) -> Result<Vec<f32>, TtsError> {
        if voice != self.voice {
            return Err(TtsError::UnknownVoice(voice.to_owned()));
        }
        let ids = self.ids(phonemes);
        if ids.len() <= 3 {
            return Ok(Vec::new());
        }
        let run = |e: ort::Error| TtsError::Inference(e.to_string());
        let len = ids.len();
        let input = Tensor::from_array(([1usize, len], ids)).map_err(run)?;
        let lengths = Tensor::from_array(([1usize], vec![len as i64])).map_err(run)?;
        let scales = Tensor::from_array(([3usize], self.scales.to_vec())).map_err(run)?;
        let outputs = if self.has_speaker_input {
            let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(run)?;
            self.session.run(ort::inputs![
                "input" => input, "input_lengths" => lengths, "scales" => scales, "sid" => sid
            ])
        } else {
            self.session
                .run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales])
        }
        .map_err(run)?;
        let (_, audio) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(run)?;
        Ok(audio.to_vec())
    }
}
