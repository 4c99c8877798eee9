//! Smart Turn v3.2 on onnxruntime: the probability that a speaker has finished their turn,
//! judged from how the last 8 seconds of their audio sound (intonation, drawn-out words), not
//! from what was said. Batched across sessions like the VAD.
//!
//! Input per row: Whisper log-mel features `[80, 800]` of exactly 8 s at 16 kHz; a shorter
//! turn is padded with silence in front, a longer one keeps its last 8 s, so the turn's end
//! always sits at the end of the window.

use std::path::Path;

use antiphon_kernels::whisper_mel::{N_MELS, WhisperLogMel};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use crate::onnx::{self, OnnxError};
use crate::store::ModelStore;

/// Store id and file of the model.
pub const SMART_TURN_MODEL: &str = "smart-turn-v3";
pub const SMART_TURN_FILE: &str = "smart-turn-v3.2-cpu.onnx";

/// Audio the model looks at, in samples at 16 kHz (8 s).
pub const WINDOW_SAMPLES: usize = 8 * 16_000;
/// Feature frames per window.
const FRAMES: usize = WINDOW_SAMPLES / antiphon_kernels::whisper_mel::HOP;

#[derive(Debug, thiserror::Error)]
pub enum SmartTurnError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("smart turn inference failed: {0}")]
    Run(String),
    #[error("smart turn returned an unexpected output: {0}")]
    Output(String),
}

fn run_err(e: impl std::fmt::Display) -> SmartTurnError {
    SmartTurnError::Run(e.to_string())
}

/// The loaded model and its feature extractor.
pub struct SmartTurn {
    session: Session,
    mel: WhisperLogMel,
}

impl SmartTurn {
    /// Loads the model from the store with `threads` intra-op threads.
    pub fn load(store: &ModelStore, threads: usize) -> Result<Self, SmartTurnError> {
        let env = onnx::environment(store)?;
        let path = store
            .file(SMART_TURN_MODEL, SMART_TURN_FILE)
            .map_err(OnnxError::from)?;
        Self::load_file(&env, &path, threads)
    }

    pub fn load_file(
        env: &Environment,
        path: &Path,
        threads: usize,
    ) -> Result<Self, SmartTurnError> {
        Ok(Self {
            session: onnx::session(env, path, threads)?,
            mel: WhisperLogMel::new(),
        })
    }

    /// The features of one turn's audio as the model sees them (see the module docs).
    pub fn features(&mut self, turn: &[f32]) -> Vec<f32> {
        self.mel.compute(&window(turn))
    }

    /// P(turn complete) for each row: `turns[i]` is one speaker's audio (16 kHz mono) from the
    /// start of their turn up to now, silence after their last word included.
    pub fn predict(&mut self, turns: &[&[f32]]) -> Result<Vec<f32>, SmartTurnError> {
        let batch = turns.len();
        if batch == 0 {
            return Ok(Vec::new());
        }
        let mut input = Vec::with_capacity(batch * N_MELS * FRAMES);
        for turn in turns {
            input.extend(self.features(turn));
        }
        let input = Tensor::from_array(([batch, N_MELS, FRAMES], input)).map_err(run_err)?;
        let outputs = self
            .session
            .run(ort::inputs!["input_features" => input])
            .map_err(run_err)?;
        let (_, probs) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| SmartTurnError::Output(e.to_string()))?;
        if probs.len() != batch {
            return Err(SmartTurnError::Output(format!(
                "{} probabilities for a batch of {batch}",
                probs.len()
            )));
        }
        Ok(probs.to_vec())
    }
}

/// The last [`WINDOW_SAMPLES`] of `turn`, padded with zeros in front when it is shorter.
fn window(turn: &[f32]) -> Vec<f32> {
    let keep = &turn[turn.len().saturating_sub(WINDOW_SAMPLES)..];
    let mut out = vec![0.0; WINDOW_SAMPLES - keep.len()];
    out.extend_from_slice(keep);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ends_where_the_turn_ends() {
        let short: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let w = window(&short);
        assert_eq!(w.len(), WINDOW_SAMPLES);
        assert_eq!(&w[WINDOW_SAMPLES - 10..], short.as_slice());
        assert!(w[..WINDOW_SAMPLES - 10].iter().all(|&x| x == 0.0));
        let long: Vec<f32> = (0..WINDOW_SAMPLES + 5).map(|i| i as f32).collect();
        let w = window(&long);
        assert_eq!(w[0], 5.0);
        assert_eq!(*w.last().expect("full"), (WINDOW_SAMPLES + 4) as f32);
    }
}
