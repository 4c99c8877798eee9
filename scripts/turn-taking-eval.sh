#!/usr/bin/env bash
# Issue 16's turn-taking evaluation against a running server: for each turn detector setting,
# TTFB on the complete LibriVox clips and the cut-in rate on the paused set (a pause of
# 400-900 ms at every mid-sentence gap the recogniser confirms; see loadtest/src/paused_set.rs).
# One caller at a time; short replies (the caller listens to each before speaking again). Each
# paused utterance is a caller of its own (--fresh-session-per-turn): the set repeats a few
# sentences with the pause moved, and in one conversation the LLM's sentence-end signal would read
# where the same sentence ended last time (the recogniser writes a full stop at every pause).
#
#   scripts/turn-taking-eval.sh ws://127.0.0.1:18097/v1/realtime SERVER_PID OUT_DIR
#
# Needs the release loadtest (cargo build --release -p antiphon-loadtest). Writes one JSON
# report per run into OUT_DIR and prints a table.
set -euo pipefail
url="$1"
pid="$2"
out="$3"
loadtest="$(dirname "$0")/../target/release/antiphon-loadtest"
settings=(server_vad:500 server_vad:300 semantic_vad:low semantic_vad:medium semantic_vad:high)
mkdir -p "$out"
for s in "${settings[@]}"; do
    name="${s//:/_}"
    "$loadtest" run --url "$url" -n 1 --turns 5 --max-output-tokens 12 --turn-detection "$s" \
        --server-pid "$pid" --json "$out/complete_$name.json" >"$out/complete_$name.log"
    "$loadtest" run --url "$url" -n 1 --turns 14 --max-output-tokens 12 --turn-detection "$s" \
        --pause-ms 400,550,700,900 --pause-every-gap --fresh-session-per-turn --server-pid "$pid" \
        --json "$out/paused_$name.json" >"$out/paused_$name.log"
done
python3 - "$out" "${settings[@]}" <<'PY'
import json, sys
out, settings = sys.argv[1], sys.argv[2:]
print("| setting | complete: TTFB p50 / p90 (ms) | paused: cut-ins | paused: TTFB p50 (ms) |")
print("|---|---|---|---|")
for s in settings:
    name = s.replace(":", "_")
    c = json.load(open(f"{out}/complete_{name}.json"))["steps"][0]["summary"]
    p = json.load(open(f"{out}/paused_{name}.json"))["steps"][0]["summary"]
    f = lambda v: "-" if v is None else f"{v:.0f}"
    print(f"| {s} | {f(c['ttfb_ms']['p50'])} / {f(c['ttfb_ms']['p90'])} | "
          f"{p['cut_ins']} / {p['turns']} | {f(p['ttfb_ms']['p50'])} |")
PY
