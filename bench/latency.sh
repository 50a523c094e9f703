#!/usr/bin/env bash
# Latency from the gateway's 202 to the window's row on the aggregates topic (p50, p99), with the
# processor checkpointing every second. Starts its own broker, gateway and processor, runs
# bench/latency.py for SECONDS (default 60) and stops everything.
#
#   bench/latency.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
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
"$PITGUN" gateway --listen "127.0.0.1:$HTTP" --keys "$STACK/keys.yaml" 2>"$STACK/gateway.log" & PIDS+=($!)
"$PITGUN" process --manifest manifests/pipelines/client-health.v1.yaml --state-dir "$STACK/state" \
  --checkpoint-interval 1s 2>"$STACK/process.log" & PIDS+=($!)
for _ in $(seq 1 100); do grep -q "partition" "$STACK/process.log" && break; sleep 0.2; done
python3 bench/latency.py "$PITGUN" "http://127.0.0.1:$HTTP" "$TOKEN" "pitgun.aggregates.client-health.v1" "$SECS"
