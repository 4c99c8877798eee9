//! Every `.cu` source compiles to PTX with NVRTC 13.0 (no GPU needed): `.version 9.0` (what
//! driver 580 accepts; a newer NVRTC emits a newer version and the GPU machines would refuse
//! it), `.target sm_90`, and every kernel the Rust side launches is defined.
//!
//! Needs libnvrtc.so.13 on LD_LIBRARY_PATH: `scripts/test.sh` installs the pinned PyPI wheel
//! (`scripts/cuda-libs.sh`). Under `CI=true` a missing NVRTC fails the test; elsewhere it is
//! skipped with a note.
#![cfg(feature = "cuda")]

use antiphon_kernels::cuda::{self, SOURCES};

fn nvrtc_or_skip() -> bool {
    if cuda::nvrtc_available() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "CI=true but libnvrtc.so.13 cannot be loaded: run scripts/cuda-libs.sh and put its lib \
         folder on LD_LIBRARY_PATH (scripts/test.sh does both)"
    );
    eprintln!("skipping: libnvrtc.so.13 not found (set LD_LIBRARY_PATH; see scripts/cuda-libs.sh)");
    false
}

#[test]
fn every_source_compiles_to_ptx_9_0_for_sm_90_with_all_entries() {
    if !nvrtc_or_skip() {
        return;
    }
    for src in SOURCES {
        let ptx = cuda::compile_ptx(&src).unwrap_or_else(|e| panic!("{}: {e}", src.name));
        let version = ptx
            .lines()
            .find(|l| l.starts_with(".version"))
            .unwrap_or_else(|| panic!("{}: no .version line", src.name));
        assert_eq!(version.trim(), ".version 9.0", "{}", src.name);
        assert!(
            ptx.lines().any(|l| l.trim() == ".target sm_90"),
            "{}: not compiled for sm_90",
            src.name
        );
        for entry in src.entries {
            assert!(
                ptx.contains(&format!(".entry {entry}(")),
                "{}: kernel {entry} missing from the PTX",
                src.name
            );
        }
    }
}

#[test]
fn a_broken_kernel_is_a_compile_error_with_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let broken = cuda::Source {
        name: "broken.cu",
        text: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
        entries: &["k"],
    };
    match cuda::compile_ptx(&broken) {
        Err(cuda::CudaError::Compile { name, log }) => {
            assert_eq!(name, "broken.cu");
            assert!(log.contains("undefined_name"), "log: {log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}
