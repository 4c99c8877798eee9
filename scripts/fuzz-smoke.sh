#!/usr/bin/env bash
# The fuzz smoke: every cargo-fuzz target in fuzz/ runs for FUZZ_SECONDS (default 20) from its
# checked-in corpus; any crash fails (libFuzzer exits non-zero and leaves the input in
# fuzz/artifacts/<target>/). New inputs go to a scratch corpus, so the repo is not modified.
# Needs the nightly toolchain (cargo-fuzz's instrumentation) and cargo-fuzz, installed here
# when missing (pinned). Longer runs: see fuzz/README.md.
#   FUZZ_RUNS=N      run each target for N executions instead of FUZZ_SECONDS (the long run)
#   FUZZ_TARGETS="a b"  only these targets
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
seconds="${FUZZ_SECONDS:-20}"
cargo_fuzz_version="0.13.2"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version"
    cargo +nightly install cargo-fuzz --version "$cargo_fuzz_version" --locked --quiet
fi

read -r -a targets <<<"${FUZZ_TARGETS:-sip_message rtp_packet sdp_offer realtime_event twilio_message config_file}"
if [[ -n "${FUZZ_RUNS:-}" ]]; then
    limit=(-runs="$FUZZ_RUNS")
    budget="$FUZZ_RUNS runs"
else
    limit=(-max_total_time="$seconds")
    budget="${seconds} s"
fi
# One build for all targets. No sanitizer: the code is safe Rust, and the smoke looks for
# panics, which debug assertions (overflow checks) make more of.
cargo +nightly fuzz build --sanitizer none --debug-assertions
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    out="$scratch/$t.log"
    started=$SECONDS
    if cargo +nightly fuzz run --sanitizer none --debug-assertions "$t" "$scratch/$t" "corpus/$t" \
        -- "${limit[@]}" -print_final_stats=1 >"$out" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' || echo "?")
        edges=$(grep -o 'cov: [0-9]*' "$out" | tail -n 1 | grep -o '[0-9]*$' || echo "?")
        echo "fuzz: $t: $runs runs in $((SECONDS - started)) s (budget $budget), $edges coverage edges, no crash"
    else
        tail -n 40 "$out" >&2
        echo "fuzz: $t FAILED (crash input under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
done
