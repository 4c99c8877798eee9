//! Numeric kernels. Each kernel has a CPU implementation; CUDA versions live behind the `cuda`
//! feature and are tested equal to the CPU ones.

pub mod fbank;
pub mod pcm;
