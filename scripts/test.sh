#!/usr/bin/env bash
# The test command: set-up (system packages, models) and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

# Models the tests load, verified by hash; nothing is downloaded when already present. The
# suite uses the default `cpu` set: the Qwen answer test, Kokoro and CAM++ need more than `ci`.
cargo run --quiet --bin antiphon -- models fetch --set cpu

# The Twilio Media Streams simulator server/tests/twilio_streamdouble.rs drives (PyPI
# streamdouble, its own venv in target/twilio-venv).
tests/twilio/setup-venv.sh >/dev/null

# NVRTC 13.0 (PyPI wheel, pinned) so the CUDA kernels are compiled to PTX and checked here, on a
# machine without a GPU (kernels/tests/ptx_compile.rs; under CI=true a missing NVRTC fails it).
nvrtc_lib="$(scripts/cuda-libs.sh)"
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Habits held by tools: formatting, and clippy with every warning an error (the workspace
# lints in Cargo.toml: no `unsafe` outside kernels/models, no `unwrap` outside tests).
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

# candle spin-waits on its own thread pool: one thread per model keeps two parallel tests from
# starving each other on a 2-core machine.
export CANDLE_NUM_THREADS="${CANDLE_NUM_THREADS:-1}"
cargo test --workspace --no-fail-fast

# Issue 19: the deployment files checked offline (Kubernetes schemas, haproxy -c, kamailio -c),
# then run for real: two nodes behind HAProxy and Kamailio on loopback, one drained mid-run.
bash scripts/setup.sh haproxy kamailio
scripts/check-deploy.sh
scripts/cluster-test.sh

# A real third-party client: the official OpenAI Python SDK's Realtime client, GA and beta,
# against `antiphon serve` (its own venv in target/sdk-venv; prints `sdk: N passed, M failed`).
tests/sdk/run.sh

# Every parser fuzzed (issue 17): each cargo-fuzz target in fuzz/ runs 20 s from its checked-in
# corpus; a crash fails here (fuzz/README.md). Needs the nightly toolchain; installs cargo-fuzz.
scripts/fuzz-smoke.sh
