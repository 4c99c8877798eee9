//! Models behind small traits, and the store they are loaded from.

pub mod onnx;
pub mod store;
pub mod tts;
pub mod diar;
