#!/usr/bin/env bash
# Gateway throughput: envelopes/s accepted (acknowledged by the broker) with NDJSON batches of 500
# over HTTP/1.1 keep-alive; and, in the same run with the same load, a baseline gateway
# (`pitgun-bench gateway`) that only parses each batch into envelopes and answers 202 — so the
# cost of validation and Kafka is the ratio.
#
#   bench/gateway.sh [ENVELOPES] [CONNECTIONS]     (defaults 1,000,000 and 4; BENCH_PROFILE=release
#                                                   for a quicker build than the default dist;
#                                                   BENCH_LOAD=simulate for the old load, below)
#
# The load: `pitgun simulate` writes the dataset first, then `pitgun-bench post` builds every
# batch and only posts them, so the load generator takes little of the two cores the gateway and
# the broker share (clients of a real gateway run elsewhere). BENCH_LOAD=simulate posts with
# `pitgun simulate --target` instead, which computes the physics while it posts (the figures in
# BENCHMARKS.md before 2026-12-03 evening).
#
# It starts its own broker (scripts/stack.sh, memory storage) on a free port, makes API keys,
# runs both gateways one after the other, counts what reached the topic, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
CONN="${2:-4}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
PROFILE="${BENCH_PROFILE:-dist}"   # dist = release with fat LTO, what a release ships
cargo build --locked --profile "$PROFILE" -p pitgun -p pitgun-bench --features pitgun/live,pitgun-bench/live >&2
PITGUN="$CARGO_TARGET_DIR/$PROFILE/pitgun"
BENCH="$CARGO_TARGET_DIR/$PROFILE/pitgun-bench"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK="$(mktemp -d /tmp/pitgun-bench-gateway.XXXXXX)"
PORT="$(free_port)"
GW_PID=""
cleanup() {
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true
  bash scripts/stack.sh down --dir "$WORK/stack" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
bash scripts/stack.sh broker start --dir "$WORK/stack" --broker-port "$PORT"
export PITGUN_BROKERS="127.0.0.1:$PORT" PITGUN_NAMESPACE="bench-gw"
bash scripts/stack.sh topics --dir "$WORK/stack" --broker-port "$PORT" --namespace "$PITGUN_NAMESPACE" --partitions 4

KEYS="$WORK/keys.yaml"
{
  echo "pitgun-web=$("$PITGUN" gateway keygen --source pitgun-web --keys "$KEYS" 2>/dev/null)"
  echo "pitgun-sim=$("$PITGUN" gateway keygen --source pitgun-sim --keys "$KEYS" 2>/dev/null)"
} > "$WORK/tokens"

# 60 Hz samples + 1 Hz health per session: 200 sessions × duration sized to N envelopes. The
# event times are in the past (the simulator's fixed epoch), well within the future-skew rule.
SESSIONS=200
SECS=$(( N / SESSIONS / 61 + 1 ))
LOAD=(simulate --seed 1 --sessions "$SESSIONS" --duration "${SECS}s" --batch 500 --concurrency "$CONN" --api-keys "$WORK/tokens")
LOAD_KIND="${BENCH_LOAD:-post}"
case "$LOAD_KIND" in
  post) "$PITGUN" simulate --seed 1 --sessions "$SESSIONS" --duration "${SECS}s" --output "$WORK/load.ndjson" ;;
  simulate) ;;
  *) echo "BENCH_LOAD must be post or simulate, not $LOAD_KIND" >&2; exit 2 ;;
esac

start_gateway() { # start_gateway LOGFILE PROGRAM ARGS... → sets GW_PID and URL
  local logf="$1"; shift
  "$@" --listen 127.0.0.1:0 2>"$logf" &
  GW_PID=$!
  local end=$((SECONDS + 30))
  until grep -q "listening on" "$logf"; do
    [ $SECONDS -lt $end ] || { cat "$logf" >&2; echo "gateway did not start" >&2; exit 1; }
    sleep 0.1
  done
  URL="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$logf" | head -1)"
  until curl -sf "$URL/readyz" >/dev/null; do
    [ $SECONDS -lt $end ] || { cat "$logf" >&2; echo "gateway not ready" >&2; exit 1; }
    sleep 0.1
  done
}
stop_gateway() { kill -TERM "$GW_PID"; wait "$GW_PID" || true; GW_PID=""; }

run_load() { # run_load → prints the load generator's summary and CPU, sets RATE and ACCEPTED
  local out line
  if [ "$LOAD_KIND" = post ]; then
    out="$(/usr/bin/time -f "loadgen: user %U s, sys %S s, peak RSS %M KB" "$BENCH" post --target "$URL" --input "$WORK/load.ndjson" \
      --api-keys "$WORK/tokens" --batch 500 --concurrency "$CONN" 2>&1)" || { echo "$out" >&2; exit 1; }
    echo "$out" | sed "s/^/  /"
    line="$(echo "$out" | grep '^{')" || { echo "$out" >&2; echo "pitgun-bench post printed no summary" >&2; exit 1; }
    ACCEPTED="$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accepted"])')"
    RATE="$(echo "$line" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["envelopes_per_second"]))')"
    return
  fi
  out="$(/usr/bin/time -f "loadgen: user %U s, sys %S s, peak RSS %M KB" "$PITGUN" "${LOAD[@]}" --target "$URL" 2>&1 >/dev/null)" || { echo "$out" >&2; exit 1; }
  echo "$out" | sed "s/^/  /"
  line="$(echo "$out" | grep '^simulate: posted')" || { echo "$out" >&2; echo "pitgun simulate printed no summary" >&2; exit 1; }
  ACCEPTED="$(echo "$line" | sed -n 's/.*accepted \([0-9]*\),.*/\1/p')"
  RATE="$(echo "$line" | sed -n 's/.*; \([0-9]*\) envelopes\/s accepted.*/\1/p')"
}

bash bench/machine.sh
if [ "$LOAD_KIND" = post ]; then
  echo "load: pitgun-bench post --batch 500 --concurrency $CONN, $(wc -l < "$WORK/load.ndjson") envelopes from pitgun ${LOAD[*]:0:7} --output"
else
  echo "load: pitgun ${LOAD[*]} --target URL"
fi

start_gateway "$WORK/gateway.log" "$PITGUN" gateway --keys "$KEYS"
echo "gateway (validation + Kafka, acks=all, idempotent, lz4):"
run_load
GW_RATE="$RATE"; GW_ACCEPTED="$ACCEPTED"
curl -s "$URL/metrics" | grep -E '^pitgun_gateway_(envelopes_accepted_total|requests_total|produce_seconds_(sum|count))' | sed 's/^/  /'
read -r UT ST < <(awk '{print $14, $15}' "/proc/$GW_PID/stat")
echo "  gateway CPU: $(python3 -c "print(f'{($UT + $ST) / $(getconf CLK_TCK):.2f}')") s"
stop_gateway
STORED="$("$BENCH" consume | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')"
echo "  records on the envelopes topic: $STORED (accepted: $GW_ACCEPTED)"

start_gateway "$WORK/baseline.log" "$BENCH" gateway
echo "baseline (parse into envelopes, answer 202):"
run_load
BASE_RATE="$RATE"
stop_gateway

python3 - "$GW_RATE" "$BASE_RATE" "$GW_ACCEPTED" "$STORED" <<'PY'
import sys
gw, base, accepted, stored = map(int, sys.argv[1:])
print(f"gateway {gw:,} envelopes/s accepted; baseline {base:,}/s; ratio {gw / base:.2f}")
if stored != accepted:
    sys.exit(f"the topic holds {stored:,} records but {accepted:,} were acknowledged")
PY
