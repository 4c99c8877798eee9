//! Models behind small traits, and the store they are loaded from.

pub mod llm;
pub mod onnx;
pub mod store;
pub mod tts;
pub mod asr;
pub mod engine;
pub mod vad;
pub mod diar;
