//! Silero VAD v6 on onnxruntime, batched across sessions.
//!
//! One loaded model serves every session: each session keeps its own [`SileroState`] (the
//! recurrent state and the last samples of its previous frame) and [`SileroVad::step`] runs one
//! frame of every ready session as one batch.
//!
//! Like the reference wrapper of Silero v5/v6, each 512-sample frame is fed with the 64 samples
//! that preceded it prepended (576 samples per row): the model was trained that way, and without
//! the context its probabilities on clean speech drop noticeably.

use std::path::Path;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use crate::onnx::{self, OnnxError};
use crate::store::ModelStore;

/// Store id and file of the model.
pub const SILERO_MODEL: &str = "silero-vad";
pub const SILERO_FILE: &str = "silero_vad.onnx";

/// Samples per frame at 16 kHz (32 ms).
pub const FRAME_SAMPLES: usize = 512;
/// Samples of the previous frame prepended to each frame.
pub const CONTEXT_SAMPLES: usize = 64;
/// Sample rate the model runs at here.
pub const SAMPLE_RATE: i64 = 16_000;
/// Size of one session's recurrent state (shape [2, 1, 128]).
const STATE_LEN: usize = 2 * 128;

#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("silero vad inference failed: {0}")]
    Run(String),
    #[error("silero vad returned an unexpected output: {0}")]
    Output(String),
}

fn run_err(e: impl std::fmt::Display) -> VadError {
    VadError::Run(e.to_string())
}

/// One session's recurrent state.
#[derive(Debug, Clone)]
pub struct SileroState {
    state: Vec<f32>,
    context: [f32; CONTEXT_SAMPLES],
}

impl Default for SileroState {
    fn default() -> Self {
        Self {
            state: vec![0.0; STATE_LEN],
            context: [0.0; CONTEXT_SAMPLES],
        }
    }
}

impl SileroState {
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The loaded model.
pub struct SileroVad {
    session: Session,
}

impl SileroVad {
    /// Loads the model from the store with `threads` intra-op threads.
    pub fn load(store: &ModelStore, threads: usize) -> Result<Self, VadError> {
        let env = onnx::environment(store)?;
        let path = store
            .file(SILERO_MODEL, SILERO_FILE)
            .map_err(OnnxError::from)?;
        Self::load_file(&env, &path, threads)
    }

    pub fn load_file(env: &Environment, path: &Path, threads: usize) -> Result<Self, VadError> {
        Ok(Self {
            session: onnx::session(env, path, threads)?,
        })
    }

    /// Speech probability of one frame for each row: `rows[i]` is a session's state and its
    /// next [`FRAME_SAMPLES`] samples. Every state advances by one frame.
    pub fn step(&mut self, rows: &mut [(&mut SileroState, &[f32])]) -> Result<Vec<f32>, VadError> {
        let batch = rows.len();
        if batch == 0 {
            return Ok(Vec::new());
        }
        let width = CONTEXT_SAMPLES + FRAME_SAMPLES;
        let mut input = Vec::with_capacity(batch * width);
        // State layout [2, B, 128]: all rows' first half, then all rows' second half.
        let mut state = vec![0.0f32; STATE_LEN * batch];
        for (b, (st, frame)) in rows.iter().enumerate() {
            if frame.len() != FRAME_SAMPLES {
                return Err(VadError::Run(format!(
                    "frame of {} samples, expected {FRAME_SAMPLES}",
                    frame.len()
                )));
            }
            input.extend_from_slice(&st.context);
            input.extend_from_slice(frame);
            for half in 0..2 {
                let dst = half * batch * 128 + b * 128;
                state[dst..dst + 128].copy_from_slice(&st.state[half * 128..half * 128 + 128]);
            }
        }
        let input = Tensor::from_array(([batch, width], input)).map_err(run_err)?;
        let state_t = Tensor::from_array(([2, batch, 128], state)).map_err(run_err)?;
        let sr = Tensor::from_array((Vec::<usize>::new(), vec![SAMPLE_RATE])).map_err(run_err)?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => input, "state" => state_t, "sr" => sr])
            .map_err(run_err)?;
        let (_, probs) = outputs["output"]
            .try_extract_tensor::<f32>()
            .map_err(|e| VadError::Output(e.to_string()))?;
        let (_, new_state) = outputs["stateN"]
            .try_extract_tensor::<f32>()
            .map_err(|e| VadError::Output(e.to_string()))?;
        if probs.len() != batch || new_state.len() != STATE_LEN * batch {
            return Err(VadError::Output(format!(
                "{} probabilities and {} state values for a batch of {batch}",
                probs.len(),
                new_state.len()
            )));
        }
        for (b, (st, frame)) in rows.iter_mut().enumerate() {
            for half in 0..2 {
                let src = half * batch * 128 + b * 128;
                st.state[half * 128..half * 128 + 128].copy_from_slice(&new_state[src..src + 128]);
            }
            st.context
                .copy_from_slice(&frame[FRAME_SAMPLES - CONTEXT_SAMPLES..]);
        }
        Ok(probs.to_vec())
    }
}
