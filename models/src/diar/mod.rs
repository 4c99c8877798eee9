//! Speaker diarization: Kaldi fbank -> CAM++ speaker embeddings over sliding windows of speech
//! -> online clustering into stable labels `S1`, `S2`, ... ([`online`]), scored with [`der`].

pub mod campplus;
pub mod der;
pub mod embedder;
pub mod engine;
pub mod live;
pub mod online;
pub mod pipeline;
pub mod rttm;
pub mod speech;

pub use campplus::{CamPlusPlus, EMBEDDING_DIM, cosine};
pub use embedder::SpeakerEmbedder;
pub use online::{EmbedJob, LabelChange, OnlineConfig, OnlineDiarizer, Segment};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DiarError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the CAM++ checkpoint {0}")]
    Checkpoint(String),
    #[error("the CAM++ checkpoint lacks tensor {0}")]
    MissingTensor(String),
    #[error("{frames} fbank frames is too short for a speaker embedding (need {min})")]
    TooShort { frames: usize, min: usize },
    #[error("bad input shape: {0}")]
    Shape(String),
    #[error("audio must be 16 kHz mono for diarization, got {0} Hz")]
    SampleRate(u32),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Engine(#[from] engine::DiarEngineError),
    #[error(transparent)]
    Fbank(#[from] antiphon_kernels::fbank::FbankError),
    #[error("{0}")]
    Gpu(String),
}
