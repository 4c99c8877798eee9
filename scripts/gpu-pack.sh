#!/usr/bin/env bash
# Builds what a GPU machine needs for scripts/gpu-check.sh, here (the GPU machines have no Rust
# toolchain and no network). One call to a GPU machine carries at most 64 MiB, so there are two
# payloads:
#   scripts/gpu-pack.sh        -> target/gpu-payload (kernels, LLM, throughput)
#     gpu_check            the check + benchmark binary (release, stripped, portable x86-64-v3 so
#                          it runs on any AVX2 host CPU, CUDA loaded at run time)
#     smollm2-cut.gguf     SmolLM2-135M cut to its first $LAYERS layers (real weights)
#     qwen-header.gguf     Qwen2.5-0.5B's GGUF header and tensor table only (synthetic weights)
#   scripts/gpu-pack.sh diar   -> target/gpu-payload-diar (kernels, speaker front end)
#     gpu_check, campplus.pt (CAM++), speech.wav (a LibriVox clip)
# Needs the models (`antiphon models fetch --set cpu`).
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS="${LAYERS:-4}"
models="${ANTIPHON_MODELS:-$HOME/.cache/antiphon/models}"
what="${1:-llm}"
out=target/gpu-payload
[ "$what" = diar ] && out=target/gpu-payload-diar
rm -rf "$out"
mkdir -p "$out"
export CARGO_TARGET_DIR=target/gpu RUSTFLAGS="-C target-cpu=x86-64-v3"
cargo build --release -p antiphon-models --features cuda --example gpu_check --example gguf_cut
bin=target/gpu/release/examples
strip -o "$out/gpu_check" "$bin/gpu_check"
if [ "$what" = diar ]; then
  cp "$models/campplus/campplus_cn_en_common.pt" "$out/campplus.pt"
  cp "$models/librivox-clips/sense_and_sensibility_01_austen_64kb-0870.wav" "$out/speech.wav"
else
  "$bin/gguf_cut" "$models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf" "$out/smollm2-cut.gguf" --layers "$LAYERS"
  "$bin/gguf_cut" "$models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" "$out/qwen-header.gguf" --header
fi
cp scripts/gpu-check.sh "$out/"
du -sh "$out"/*
