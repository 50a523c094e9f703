#!/usr/bin/env bash
# Latency from the gateway's 202 to the window's row on the aggregates topic (p50, p99), with the
# processor checkpointing every second. Starts its own broker, gateway and processor, runs
# bench/latency.py for SECONDS (default 60) beside a background load of BACKGROUND envelopes/s
# (default 100,000; 0 for none) that `pitgun simulate --target` posts to the same gateway in
# batches of 500 (200 other sessions, through the same processor), and stops everything.
#
#   bench/latency.sh [SECONDS] [BACKGROUND]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
BACKGROUND="${2:-100000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
cargo build --locked --release -p pitgun --features live >&2
PITGUN="$CARGO_TARGET_DIR/release/pitgun"
STACK="$(mktemp -d /tmp/pitgun-latency.XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"; HTTP="$(free_port)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; bash scripts/stack.sh down --dir "$STACK"; rm -rf "$STACK"; }
trap cleanup EXIT
bash scripts/stack.sh broker start --dir "$STACK" --broker-port "$PORT"
export PITGUN_BROKERS="127.0.0.1:$PORT" PITGUN_NAMESPACE="latency"
bash scripts/stack.sh topics --dir "$STACK" --broker-port "$PORT" --namespace latency
TOKEN="$("$PITGUN" gateway keygen --source pitgun-sim --keys "$STACK/keys.yaml" 2>/dev/null)"
WEB_TOKEN="$("$PITGUN" gateway keygen --source pitgun-web --keys "$STACK/keys.yaml" 2>/dev/null)"
printf 'pitgun-sim=%s\npitgun-web=%s\n' "$TOKEN" "$WEB_TOKEN" > "$STACK/tokens"
"$PITGUN" gateway --listen "127.0.0.1:$HTTP" --keys "$STACK/keys.yaml" 2>"$STACK/gateway.log" & PIDS+=($!)
"$PITGUN" process --manifest manifests/pipelines/client-health.v1.yaml --state-dir "$STACK/state" \
  --checkpoint-interval 1s 2>"$STACK/process.log" & PIDS+=($!)
for _ in $(seq 1 100); do grep -q "partition" "$STACK/process.log" && break; sleep 0.2; done
if [ "$BACKGROUND" -gt 0 ]; then
  # Enough simulated envelopes to outlast the measurement (200 sessions at 61 envelopes/s of event
  # time each); the load stops with the script. The gateway's acknowledged rate during the
  # measurement is what latency.py reports.
  SIM_SECS=$(( BACKGROUND * (SECS + 15) / 200 / 61 + 1 ))
  "$PITGUN" simulate --quiet --seed 7 --sessions 200 --duration "${SIM_SECS}s" --batch 500 --concurrency 4 \
    --target "http://127.0.0.1:$HTTP" --target-rate "$BACKGROUND" --api-keys "$STACK/tokens" 2>"$STACK/simulate.log" & PIDS+=($!)
fi
python3 bench/latency.py "$PITGUN" "http://127.0.0.1:$HTTP" "$TOKEN" "pitgun.aggregates.client-health.v1" "$SECS"
