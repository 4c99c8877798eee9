//! Streaming text-to-speech: normalisation, G2P, chunking, and the Piper and Kokoro engines.
//!
//! Text flows: LLM tokens -> [`chunker::TextChunker`] (on the session side) -> engine thread:
//! [`normalize::normalize`] -> [`g2p::G2p`] -> [`SpeechModel::synthesize`] ->
//! [`shape::shape_chunk`] -> [`TtsChunk`] back to the session.

pub mod chunker;
pub mod engine;
pub mod g2p;
pub mod kokoro;
pub mod kokoro_timing;
pub mod letters;
pub mod lexicon;
pub mod load;
pub mod normalize;
pub mod numbers;
pub mod piper;
pub mod played;
pub mod shape;
pub mod symbols;

pub use engine::{EngineConfig, TtsChunk, TtsEngine, TtsEvent, TtsStream};

use crate::onnx::OnnxError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Lexicon(#[from] lexicon::LexiconError),
    #[error("bad model config {path}: {message}")]
    Config { path: String, message: String },
    #[error("unknown voice {0:?}")]
    UnknownVoice(String),
    #[error("synthesis failed: {0}")]
    Inference(String),
    #[error("the TTS engine queue is full (the request was refused; try again shortly)")]
    QueueFull,
    #[error("the TTS engine has stopped")]
    EngineStopped,
    #[error("cannot start the TTS engine thread: {0}")]
    Spawn(String),
}

/// One loaded speech model, driven by exactly one engine thread.
pub trait SpeechModel {
    /// Native output rate in Hz.
    fn sample_rate(&self) -> u32;
    /// Voice names this model can speak with.
    fn voices(&self) -> Vec<String>;
    /// Mono f32 audio for one chunk of misaki phonemes, in `voice`.
    fn synthesize(
        &mut self,
        phonemes: &str,
        voice: &str,
        urgency: Urgency,
    ) -> Result<Vec<f32>, TtsError>;
}

/// Whether a listener is waiting on a chunk. The first chunk of a reply is the last term of
/// TTFB; later ones are made while earlier audio plays (RTF < 1), so only the first is worth
/// trading exactness for speed (Kokoro caps its silent frames for it; Piper has no such knob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// The first chunk of a reply: the caller hears nothing until it is done.
    FirstAudio,
    /// A later chunk, made ahead of playback.
    Ahead,
}

/// Which engine serves a voice name: `joe` is Piper, every other name a Kokoro voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Piper,
    Kokoro,
}

impl EngineKind {
    pub fn for_voice(voice: &str) -> Self {
        if voice == piper::PIPER_JOE_VOICE {
            Self::Piper
        } else {
            Self::Kokoro
        }
    }
}
