#!/usr/bin/env bash
# Runs every GPU check and benchmark in one go on a machine with a CUDA GPU and prints one
# summary (kernels vs CPU twins, GPU LLM vs CPU LLM on real weights, batched vs single decode,
# the engine on the GPU, decode/TTFT throughput on Qwen2.5-0.5B shapes; with the diar payload,
# speaker embeddings through the GPU fbank front end). Takes a folder scripts/gpu-pack.sh filled
# (default target/gpu-payload) and runs the sections whose files it holds. Exit 0 only if every
# check passed.
set -uo pipefail
cd "$(dirname "$0")/.."
payload="${1:-target/gpu-payload}"
# The CUDA 13 libraries (cuBLAS, cuBLASLt, NVRTC) as pip wheels, and the driver.
if cu13="$(python3 -c 'import nvidia.cu13 as m; print(list(m.__path__)[0])' 2>/dev/null)"; then
  export LD_LIBRARY_PATH="$cu13/lib:${LD_LIBRARY_PATH:-}"
fi
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/nvidia/lib64"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
# The CPU reference LLM runs on candle: a fixed thread count (it spin-waits).
export CANDLE_NUM_THREADS="${CANDLE_NUM_THREADS:-8}"
log="${OUT:-/tmp}/gpu-check.log"
args=()
[ -f "$payload/smollm2-cut.gguf" ] && args+=(--smollm "$payload/smollm2-cut.gguf")
[ -f "$payload/qwen-header.gguf" ] && args+=(--qwen-header "$payload/qwen-header.gguf")
[ -f "$payload/campplus.pt" ] && args+=(--campplus "$payload/campplus.pt" --wav "$payload/speech.wav")
"$payload/gpu_check" "${args[@]}" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
