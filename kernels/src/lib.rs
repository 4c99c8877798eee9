//! Numeric kernels. Each kernel has a CPU implementation; CUDA versions live behind the `cuda`
//! feature (loaded at run time, see [`cuda`]) and are tested equal to their CPU twins.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod fbank;
pub mod llm_ref;
pub mod pcm;
pub mod whisper_mel;

pub use device::DeviceChoice;
