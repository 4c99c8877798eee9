//! Where the models run (`--device` / `[server] device`): `cpu`, `cuda:N`, or `auto` (the GPU
//! when the CUDA libraries load and a device answers). Resolved once, before any model loads.
//! Only the LLM runs on the GPU so far; speech models stay on onnxruntime's CPU provider.

use antiphon_kernels::DeviceChoice;

/// The resolved placement of the LLM.
pub enum Placement {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(std::sync::Arc<antiphon_kernels::cuda::Gpu>),
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Cpu => f.write_str("cpu"),
            #[cfg(feature = "cuda")]
            Placement::Cuda(g) => write!(f, "{}", g.info),
        }
    }
}

/// Open the device `choice` names. `Err` (a message for the user) only when a GPU was asked
/// for explicitly and cannot be used.
pub fn resolve(choice: DeviceChoice) -> Result<Placement, String> {
    match choice {
        DeviceChoice::Cpu => Ok(Placement::Cpu),
        DeviceChoice::Auto => match open(0) {
            Ok(p) => Ok(p),
            Err(why) => {
                tracing::info!("device auto: no usable GPU ({why}); running on the CPU");
                Ok(Placement::Cpu)
            }
        },
        DeviceChoice::Cuda(n) => open(n),
    }
}

#[cfg(feature = "cuda")]
fn open(ordinal: usize) -> Result<Placement, String> {
    use antiphon_kernels::cuda;
    // Each library is probed before use: cudarc panics when one is missing.
    let gpu = cuda::Gpu::open(ordinal).map_err(|e| e.to_string())?;
    if !cuda::nvrtc_available() {
        return Err(cuda::CudaError::NoNvrtc.to_string());
    }
    if !cuda::cublas_available() {
        return Err(cuda::CudaError::NoCublas.to_string());
    }
    // Compile and load the kernels now (cached for the models): a driver older than CUDA 13
    // rejects our PTX, and `auto` must fall back to the CPU then, not fail at model load.
    gpu.load(&cuda::LLM_SOURCE).map_err(|e| e.to_string())?;
    Ok(Placement::Cuda(std::sync::Arc::new(gpu)))
}

#[cfg(not(feature = "cuda"))]
fn open(_ordinal: usize) -> Result<Placement, String> {
    Err("this antiphon was built without the `cuda` feature; use --device cpu".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_never_touches_cuda_and_auto_always_resolves() {
        assert!(matches!(resolve(DeviceChoice::Cpu), Ok(Placement::Cpu)));
        assert!(resolve(DeviceChoice::Auto).is_ok());
    }

    #[test]
    fn an_absent_gpu_is_a_clear_error_not_a_panic() {
        // Ordinal 4096 exists nowhere: on a machine without CUDA the driver is missing, on a
        // GPU machine the device is; either way a message, never a panic.
        let Err(msg) = resolve(DeviceChoice::Cuda(4096)) else {
            panic!("cuda:4096 resolved");
        };
        assert!(
            msg.contains("no CUDA") || msg.contains("cuda") || msg.contains("CUDA"),
            "{msg}"
        );
    }
}
