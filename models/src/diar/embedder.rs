//! Samples -> speaker embedding: fbank, mean normalisation over time, CAM++.
//!
//! The fbank front end runs on the CPU, or (with the `cuda` feature and a GPU) for every window
//! of an engine tick in one launch; the two are tested equal (kernels' GPU checks, and
//! `gpu_check --campplus` on the embeddings themselves).

use std::path::Path;

use antiphon_kernels::fbank::{Fbank, FbankConfig, subtract_mean};

use super::DiarError;
use super::campplus::{CAMPPLUS_FILE, CAMPPLUS_MODEL, CamPlusPlus, FEATURE_DIM};
use crate::store::ModelStore;

/// Where the fbank features are computed. One per embedder, so variant sizes don't matter.
#[allow(clippy::large_enum_variant)]
enum FrontEnd {
    Cpu(Fbank),
    #[cfg(feature = "cuda")]
    Gpu(antiphon_kernels::cuda::fbank::GpuFbank),
}

impl std::fmt::Debug for FrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FrontEnd {
    fn name(&self) -> &'static str {
        match self {
            FrontEnd::Cpu(_) => "cpu",
            #[cfg(feature = "cuda")]
            FrontEnd::Gpu(_) => "cuda",
        }
    }

    /// Features of each window, `[frames][FEATURE_DIM]` each (before mean normalisation).
    fn features(&mut self, windows: &[&[f32]]) -> Result<Vec<Vec<f32>>, DiarError> {
        match self {
            FrontEnd::Cpu(fb) => Ok(windows.iter().map(|w| fb.compute(w)).collect()),
            #[cfg(feature = "cuda")]
            FrontEnd::Gpu(fb) => fb
                .compute_batch(windows)
                .map_err(|e| DiarError::Gpu(format!("GPU fbank: {e}"))),
        }
    }

    fn num_frames(&self, samples: usize) -> usize {
        // Both front ends frame identically (25 ms windows every 10 ms, snip_edges).
        let cfg = FbankConfig::default();
        let len = (cfg.sample_rate as f32 * cfg.frame_length_ms / 1000.0).round() as usize;
        let shift = (cfg.sample_rate as f32 * cfg.frame_shift_ms / 1000.0).round() as usize;
        if samples < len {
            0
        } else {
            1 + (samples - len) / shift
        }
    }
}

/// The sample rate CAM++ was trained at.
pub const SAMPLE_RATE: u32 = 16_000;

/// Owns the model and the front end; used by exactly one thread.
#[derive(Debug)]
pub struct SpeakerEmbedder {
    front: FrontEnd,
    model: CamPlusPlus,
}

impl SpeakerEmbedder {
    pub fn load(store: &ModelStore) -> Result<Self, DiarError> {
        Self::from_file(&store.file(CAMPPLUS_MODEL, CAMPPLUS_FILE)?)
    }

    /// CAM++ from its checkpoint file, with the CPU front end.
    pub fn from_file(path: &Path) -> Result<Self, DiarError> {
        Ok(Self {
            front: FrontEnd::Cpu(Fbank::new(FbankConfig::default())?),
            model: CamPlusPlus::load(path)?,
        })
    }

    /// Compute the fbank features on `gpu` from now on (one launch per batch of windows).
    /// Give it a [`antiphon_kernels::cuda::Gpu`] of its own: its stream is synchronised per
    /// batch, and must not be one another engine records graphs on.
    #[cfg(feature = "cuda")]
    pub fn use_gpu(
        &mut self,
        gpu: std::sync::Arc<antiphon_kernels::cuda::Gpu>,
    ) -> Result<(), DiarError> {
        let fb = antiphon_kernels::cuda::fbank::GpuFbank::new(gpu, FbankConfig::default())
            .map_err(|e| DiarError::Gpu(format!("GPU fbank: {e}")))?;
        self.front = FrontEnd::Gpu(fb);
        Ok(())
    }

    /// "cpu" or "cuda": where the front end runs.
    pub fn front_end(&self) -> &'static str {
        self.front.name()
    }

    /// One embedding per window of 16 kHz samples in [-1, 1]; windows of equal length run as
    /// one batch.
    pub fn embed(&mut self, windows: &[&[f32]]) -> Result<Vec<Vec<f32>>, DiarError> {
        // Features of every window first (one launch on the GPU), then CAM++ per run of
        // windows of equal length.
        let mut feats = self.front.features(windows)?;
        for f in &mut feats {
            subtract_mean(f, FEATURE_DIM);
        }
        let mut out = Vec::with_capacity(windows.len());
        let mut start = 0;
        while start < windows.len() {
            let len = windows[start].len();
            let end = start
                + windows[start..]
                    .iter()
                    .take_while(|w| w.len() == len)
                    .count();
            let frames = self.front.num_frames(len);
            let batch: Vec<f32> = feats[start..end].concat();
            out.extend(self.model.embed(&batch, end - start, frames)?);
            start = end;
        }
        Ok(out)
    }
}
