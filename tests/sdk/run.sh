#!/usr/bin/env bash
# Third-party client test: the official OpenAI Python SDK's Realtime client (GA and beta
# dialects) against a real `antiphon serve` with the CI models (SmolLM2 LLM), one spoken turn
# each. Creates/reuses a venv at target/sdk-venv, builds the debug binary if needed, starts the
# server on a free port, runs tests/sdk/test_realtime_sdk.py per dialect, once with server_vad
# and once with semantic_vad, and ends with the line
# `sdk: N passed, M failed`. Exits non-zero when anything failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

venv=target/sdk-venv
req=tests/sdk/requirements.txt
dialects=(ga beta)
turn_detections=(server_vad semantic_vad)
passed=0
failed=0

finish() {
  echo "sdk: $passed passed, $failed failed"
  if [ "$failed" -eq 0 ]; then exit 0; else exit 1; fi
}

fail_all() {
  echo "sdk: $1" >&2
  failed=$(( ${#dialects[@]} * ${#turn_detections[@]} ))
  finish
}

# The venv is reused while its installed requirements match the pinned file.
if ! [ -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements.txt" \
   || ! "$venv/bin/python" -c 'import openai, websockets' 2>/dev/null; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 needs python3-venv for ensurepip.
    bash scripts/setup.sh python3-venv
    python3 -m venv "$venv" || fail_all "could not create a venv at $venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" \
    || fail_all "pip install -r $req failed"
  cp "$req" "$venv/.requirements.txt"
fi
echo "sdk: openai $("$venv/bin/python" -c 'import openai; print(openai.__version__)') in $venv"

# A no-op after `cargo test`, which built the same binary.
cargo build --quiet --bin antiphon || fail_all "cargo build --bin antiphon failed"
bin="${CARGO_TARGET_DIR:-target}/debug/antiphon"

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The small CI model keeps the turn fast; the server's default LLM is the cpu set's Qwen.
printf '[llm]\nmodel = "smollm2-135m"\n' >"$work/antiphon.toml"
CANDLE_NUM_THREADS="${CANDLE_NUM_THREADS:-1}" RUST_LOG="${ANTIPHON_TEST_LOG:-warn}" \
  "$bin" serve --port 0 --host 127.0.0.1 --config "$work/antiphon.toml" \
  >"$work/stdout" 2>"$work/stderr" &
server_pid=$!

# Loading the engines takes seconds on a loaded 2-core box; the address is printed after.
port=""
for _ in $(seq 1 240); do
  port=$(sed -n 's/^antiphon listening on .*:\([0-9][0-9]*\)$/\1/p' "$work/stdout")
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.5
done
if [ -z "$port" ]; then
  tail -n 20 "$work/stderr" >&2
  fail_all "antiphon serve did not start (are the models in the store?)"
fi
echo "sdk: antiphon serve on 127.0.0.1:$port"

for dialect in "${dialects[@]}"; do
  for td in "${turn_detections[@]}"; do
    if timeout 120 "$venv/bin/python" tests/sdk/test_realtime_sdk.py --port "$port" \
       --dialect "$dialect" --turn-detection "$td" --timeout 60; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
      tail -n 20 "$work/stderr" >&2
    fi
  done
done
finish
