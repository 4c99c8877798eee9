//! GPU kernels against their CPU twins. The equivalence test needs a CUDA GPU and is ignored
//! elsewhere (`scripts/gpu-check.sh` runs the same checks on a GPU machine); the error-path
//! test runs everywhere.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use antiphon_kernels::cuda::{self, CudaError, Gpu};

#[test]
fn opening_a_missing_gpu_is_an_error_never_a_panic() {
    // Ordinal 4096 exists nowhere: without a driver this is NoDriver, with one NoDevice.
    match Gpu::open(4096) {
        Err(CudaError::NoDriver) => assert!(!cuda::driver_available()),
        Err(CudaError::NoDevice { ordinal, .. }) => assert_eq!(ordinal, 4096),
        Err(CudaError::Driver(e)) => eprintln!("driver refused: {e}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("device 4096 opened"),
    }
}

#[test]
#[ignore = "needs a CUDA GPU (run scripts/gpu-check.sh on a GPU machine)"]
fn every_kernel_matches_its_cpu_twin() {
    let gpu = Arc::new(Gpu::open(0).expect("a CUDA GPU"));
    let checks = cuda::check::run_all(&gpu).expect("device ran");
    for c in &checks {
        println!("{c}");
    }
    assert!(checks.iter().all(|c| c.passed));
}
