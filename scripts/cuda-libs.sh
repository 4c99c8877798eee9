#!/usr/bin/env bash
# The CUDA 13.0 NVRTC library from PyPI, for compiling the kernels to PTX on machines without a
# GPU or CUDA toolkit (the PTX tests). Pinned exactly: NVRTC 13.0.x emits PTX `.version 9.0`,
# which driver 580 (the GPU machines') accepts; newer NVRTC emits versions it rejects.
# Prints the lib folder to put on LD_LIBRARY_PATH. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="target/cuda-libs"
stamp="$dest/.nvidia-cuda-nvrtc-13.0.88"
if [ ! -f "$stamp" ]; then
  rm -rf "$dest"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dest" \
    nvidia-cuda-nvrtc==13.0.88 >&2
  touch "$stamp"
fi
lib="$(cd "$dest" && pwd)/nvidia/cu13/lib"
if [ ! -e "$lib/libnvrtc.so.13" ]; then
  echo "cuda-libs: libnvrtc.so.13 missing under $lib after install" >&2
  exit 1
fi
echo "$lib"
