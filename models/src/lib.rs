//! Models behind small traits, and the store they are loaded from.

pub mod asr;
pub mod diar;
pub mod engine;
pub mod llm;
pub mod memory;
pub mod onnx;
pub mod store;
pub mod tts;
pub mod vad;
