//! Models behind small traits, and the store they are loaded from.

pub mod llm;
pub mod onnx;
pub mod store;
