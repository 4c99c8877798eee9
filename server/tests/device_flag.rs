//! `antiphon serve --device`: a GPU asked for explicitly on a machine without one ends the
//! process with exit code 2 and a message saying why (never a panic, never a silent CPU
//! fallback); a bad device name is a config error; `auto` and `cpu` pass the config check.
//! On a machine with a CUDA GPU, device 4096 still does not exist, so the test holds there too.

use std::process::Command;

fn serve(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_antiphon"))
        .arg("serve")
        .args(args)
        .env("ANTIPHON_MODELS", "/nonexistent-models-dir")
        .output()
        .expect("run antiphon")
}

#[test]
fn an_unusable_cuda_device_exits_2_with_the_reason() {
    let out = serve(&["--device", "cuda:4096", "--port", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("cuda:4096"), "stderr: {stderr}");
    assert!(
        stderr.contains("no CUDA driver found") || stderr.contains("no CUDA device"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn device_names_are_checked_with_the_config() {
    for ok in ["auto", "cpu", "cuda:0"] {
        let out = serve(&["--device", ok, "--check"]);
        assert!(
            out.status.success(),
            "{ok}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = serve(&["--device", "tpu:0", "--check"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.device"), "stderr: {stderr}");
}
