//! Samples -> speaker embedding: fbank, mean normalisation over time, CAM++.

use antiphon_kernels::fbank::{Fbank, FbankConfig, subtract_mean};

use super::DiarError;
use super::campplus::{CAMPPLUS_FILE, CAMPPLUS_MODEL, CamPlusPlus, FEATURE_DIM};
use crate::store::ModelStore;

/// The sample rate CAM++ was trained at.
pub const SAMPLE_RATE: u32 = 16_000;

/// Owns the model and the front end; used by exactly one thread.
#[derive(Debug)]
pub struct SpeakerEmbedder {
    fbank: Fbank,
    model: CamPlusPlus,
}

impl SpeakerEmbedder {
    pub fn load(store: &ModelStore) -> Result<Self, DiarError> {
        let path = store.file(CAMPPLUS_MODEL, CAMPPLUS_FILE)?;
        Ok(Self {
            fbank: Fbank::new(FbankConfig::default())?,
            model: CamPlusPlus::load(&path)?,
        })
    }

    /// One embedding per window of 16 kHz samples in [-1, 1]; windows of equal length run as
    /// one batch.
    pub fn embed(&mut self, windows: &[&[f32]]) -> Result<Vec<Vec<f32>>, DiarError> {
        let mut out = Vec::with_capacity(windows.len());
        let mut start = 0;
        while start < windows.len() {
            let len = windows[start].len();
            let end = start
                + windows[start..]
                    .iter()
                    .take_while(|w| w.len() == len)
                    .count();
            let frames = self.fbank.num_frames(len);
            let mut feats = Vec::with_capacity((end - start) * frames * FEATURE_DIM);
            for w in &windows[start..end] {
                let mut f = self.fbank.compute(w);
                subtract_mean(&mut f, FEATURE_DIM);
                feats.extend_from_slice(&f);
            }
            out.extend(self.model.embed(&feats, end - start, frames)?);
            start = end;
        }
        Ok(out)
    }
}
