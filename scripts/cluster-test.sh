#!/usr/bin/env bash
# Issue 19's cluster test, on loopback with real components: two `antiphon serve` nodes,
# HAProxy (deploy/haproxy/haproxy.cfg, as is) in front of their HTTP/WebSocket side and
# Kamailio (deploy/kamailio/kamailio.cfg, as is) in front of their SIP side.
#
#  1. Capacity-aware balancing: node1 has one LLM slot, node2 four. Four staggered loadtest
#     sessions through HAProxy: both nodes get sessions, none fails, and node1 never has to
#     refuse one (HAProxy's agent-check saw it full and weighed it 0 %).
#  2. SIP through Kamailio: sipp places calls on both nodes (dispatcher, OPTIONS keepalives).
#  3. WebRTC: offers through HAProxy land on both nodes; each hang-up (DELETE) reaches the
#     node that owns the peer (its resource id names the node).
#  4. Drain: during a loadtest run and SIP calls, node1 gets SIGTERM. Zero failed sessions or
#     calls; sessions and calls started after it land on node2; node1 exits 0 after its last
#     call.
#
# Needs: haproxy, kamailio, sipp (scripts/setup.sh installs them), the `ci` model set, and the
# debug binaries (built here when missing). Prints a summary; exit status 0 when all passed.
#   scripts/cluster-test.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
work="${1:-$(mktemp -d /tmp/antiphon-cluster.XXXXXX)}"
mkdir -p "$work"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="${ANTIPHON_BIN:-$target_dir/debug/antiphon}"
loadtest="${ANTIPHON_LOADTEST_BIN:-$target_dir/debug/antiphon-loadtest}"
if [ ! -x "$bin" ] || [ ! -x "$loadtest" ]; then
    cargo build --quiet --bin antiphon --bin antiphon-loadtest
fi
for tool in haproxy kamailio sipp curl python3; do
    command -v "$tool" >/dev/null || { echo "cluster-test: $tool not found (scripts/setup.sh installs it)" >&2; exit 2; }
done
export CANDLE_NUM_THREADS="${CANDLE_NUM_THREADS:-1}"
export NO_COLOR=1

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

fail() {
    echo "cluster-test: FAIL: $*" >&2
    echo "cluster-test: logs in $work" >&2
    exit 1
}
say() { echo "cluster-test: $*"; }

# --- nodes -------------------------------------------------------------------------------------
node_config() { # N LLM_SLOTS
    cat <<EOF
[server]
port = 1818$1
# Above node2's peak in the drain phase (up to 6 sessions and 6 calls at once): the LLM slots,
# not the session limit, are what make a node full here.
max_sessions = 16
node_id = "node$1"
admin_keys = ["cluster-admin-key"]
drain_grace_s = 120
agent_check_listen = "127.0.0.1:1819$1"
[session]
speaker_labels = false
[llm]
model = "smollm2-135m"
max_tokens = 24
slots = $2
[sip]
listen = "127.0.0.1:1506$1"
rtp_port_min = 3${1}000
rtp_port_max = 3${1}999
EOF
}
node_config 1 1 >"$work/node1.toml"
node_config 2 4 >"$work/node2.toml"
RUST_LOG=info,antiphon_server::session=warn "$bin" serve --config "$work/node1.toml" >"$work/node1.log" 2>&1 &
node1=$!
pids+=("$node1")
RUST_LOG=info,antiphon_server::session=warn "$bin" serve --config "$work/node2.toml" >"$work/node2.log" 2>&1 &
node2=$!
pids+=("$node2")
for n in 1 2; do
    for _ in $(seq 1 240); do
        grep -q "antiphon listening" "$work/node$n.log" && break
        sleep 0.5
    done
    grep -q "antiphon listening" "$work/node$n.log" || fail "node$n did not start (see node$n.log)"
done
say "nodes up: node1 (pid $node1, 1 LLM slot), node2 (pid $node2, 4 LLM slots)"

haproxy -db -f deploy/haproxy/haproxy.cfg >"$work/haproxy.log" 2>&1 &
pids+=("$!")
kamailio -DD -E -f deploy/kamailio/kamailio.cfg \
    -A "DISPATCHER_LIST=\"$root/deploy/kamailio/dispatcher.list\"" >"$work/kamailio.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 40); do
    curl -sf http://127.0.0.1:18180/readyz >/dev/null && break
    sleep 0.5
done
curl -sf http://127.0.0.1:18180/readyz >/dev/null || fail "HAProxy does not reach a ready node"
sleep 3 # agent checks and OPTIONS keepalives have run

# Counter value on one node (0 when absent): metric NODE SERIES_PREFIX
metric() {
    curl -s "http://127.0.0.1:1818$1/metrics" |
        awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { print s + 0 }'
}
admitted() { metric "$1" "antiphon_sessions_admitted_total{node=\"node$1\",transport=\"$2\"}"; }
refused() { metric "$1" "antiphon_sessions_refused_total{node=\"node$1\""; }

# Fails unless every turn of a loadtest report got its reply and nothing errored: check NAME
check_run() {
    python3 - "$work/$1.json" "$2" <<'PY' || fail "$1: failed sessions (see $1.log)"
import json, sys
report = json.load(open(sys.argv[1]))
want = int(sys.argv[2])
s = report["steps"][0]["summary"]
ok = s["errors"] == 0 and s["turns"] == want and s["turns_with_audio"] == want
print(f"  {s['turns']} turns of {want}, {s['turns_with_audio']} with audio, {s['errors']} errors")
sys.exit(0 if ok else 1)
PY
}
ws_url="ws://127.0.0.1:18180/v1/realtime"

# --- 1. capacity-aware balancing ------------------------------------------------------------
say "1. four staggered sessions through HAProxy (node1 holds one)"
"$loadtest" run --url "$ws_url" -n 4 --turns 2 --stagger-ms 2500 --max-output-tokens 16 \
    --json "$work/balance.json" >"$work/balance.log" 2>&1 || fail "balance: loadtest failed"
check_run balance 8
b1=$(admitted 1 websocket)
b2=$(admitted 2 websocket)
r1=$(refused 1)
say "   sessions: node1 $b1, node2 $b2; node1 refused $r1"
[ "$b1" -ge 1 ] && [ "$b2" -ge 1 ] || fail "sessions did not spread over both nodes"
[ "$r1" -eq 0 ] || fail "HAProxy sent node1 a session while its only LLM slot was taken"

# --- 2. SIP through Kamailio -----------------------------------------------------------------
sipp_calls() { # NAME CALLS CALL_MS
    (cd "$work" && sipp -sf "$root/tests/sip/uac_call.xml" 127.0.0.1:5070 -i 127.0.0.1 \
        -p "$4" -m "$2" -l "$2" -r 1 -d "$3" -key rtp_port 39999 -nostdin \
        -timeout 90s -timeout_error -trace_err -trace_stat >"$work/$1.sipp.log" 2>&1)
}
say "2. four SIP calls through Kamailio"
sipp_calls sip 4 4000 25060 || fail "sip: sipp reported failed calls (see $work)"
s1=$(admitted 1 sip)
s2=$(admitted 2 sip)
say "   calls: node1 $s1, node2 $s2"
[ "$s1" -ge 1 ] && [ "$s2" -ge 1 ] || fail "calls did not spread over both nodes"

# --- 3. WebRTC hang-ups reach their node -----------------------------------------------------
say "3. WebRTC offers and hang-ups through HAProxy"
offer="$root/fuzz/corpus/sdp_offer/chromium_156_audio_datachannel"
seen=""
for i in 1 2 3 4; do
    location=$(curl -s -o /dev/null -D - -X POST http://127.0.0.1:18180/v1/webrtc \
        -H "Authorization: Bearer antiphon-demo-key" -H "Content-Type: application/sdp" \
        --data-binary @"$offer" | tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
    [ -n "$location" ] || fail "webrtc: offer $i got no Location"
    seen="$seen ${location#/v1/webrtc/}"
    code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://127.0.0.1:18180$location" \
        -H "Authorization: Bearer antiphon-demo-key")
    [ "$code" = 200 ] || fail "webrtc: DELETE $location answered $code (routed to the wrong node?)"
    sleep 1.2
done
say "   peers: $(echo "$seen" | tr ' ' '\n' | sed -n 's/-.*//p' | sort | uniq -c | xargs)"
echo "$seen" | grep -q " node1-" && echo "$seen" | grep -q " node2-" ||
    say "   (all offers landed on one node; the hang-ups still reached it)"

# --- 4. drain node1 in the middle of a run ---------------------------------------------------
say "4. node1 gets SIGTERM during a run and calls"
"$loadtest" run --url "$ws_url" -n 4 --turns 3 --stagger-ms 1500 --max-output-tokens 16 \
    --json "$work/during.json" >"$work/during.log" 2>&1 &
during=$!
sipp_calls during_sip 4 15000 25062 &
during_sip=$!
# Drain once node1 has a session and a call open.
for _ in $(seq 1 120); do
    open=$(curl -s http://127.0.0.1:18181/healthz | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessions"]["open"])' 2>/dev/null || echo 0)
    [ "$open" -ge 1 ] && break
    sleep 0.5
done
[ "$open" -ge 1 ] || fail "node1 never got a session to drain"
ws_before=$(admitted 1 websocket)
sip_before=$(admitted 1 sip)
kill -TERM "$node1"
say "   SIGTERM to node1 with $open open"
sleep 2
# New sessions and calls after the drain began: all on node2.
ws2_before=$(admitted 2 websocket)
sip2_before=$(admitted 2 sip)
"$loadtest" run --url "$ws_url" -n 2 --turns 1 --max-output-tokens 16 \
    --json "$work/after.json" >"$work/after.log" 2>&1 || fail "after: loadtest failed"
sipp_calls after_sip 2 3000 25064 || fail "after: sipp reported failed calls"
# node1 keeps answering /metrics while it drains: its last figures are its final ones.
ws_last=$ws_before
sip_last=$sip_before
while kill -0 "$node1" 2>/dev/null; do
    v=$(curl -s --max-time 1 http://127.0.0.1:18181/metrics) || true
    if [ -n "$v" ]; then
        ws_last=$(admitted 1 websocket)
        sip_last=$(admitted 1 sip)
    fi
    sleep 0.5
done
set +e
wait "$node1"
node1_status=$?
wait "$during"
during_status=$?
wait "$during_sip"
during_sip_status=$?
set -e
[ "$during_status" -eq 0 ] || fail "during: loadtest failed"
check_run during 12
check_run after 2
[ "$during_sip_status" -eq 0 ] || fail "during: sipp reported failed calls (see $work)"
ws2_after=$(admitted 2 websocket)
sip2_after=$(admitted 2 sip)
say "   node1 admitted after SIGTERM: $((ws_last - ws_before)) sessions, $((sip_last - sip_before)) calls"
say "   node2 admitted after SIGTERM: $((ws2_after - ws2_before)) sessions, $((sip2_after - sip2_before)) calls"
say "   node1 exit status: $node1_status"
[ "$((ws_last - ws_before))" -eq 0 ] && [ "$((sip_last - sip_before))" -eq 0 ] ||
    fail "the draining node admitted new work"
[ "$((ws2_after - ws2_before))" -ge 2 ] && [ "$((sip2_after - sip2_before))" -ge 2 ] ||
    fail "new sessions and calls did not land on node2"
[ "$node1_status" -eq 0 ] || fail "node1 exited $node1_status"
grep -q "drained: no call left" "$work/node1.log" || fail "node1 did not wait for its calls"
say "PASS (logs in $work)"
