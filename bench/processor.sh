#!/usr/bin/env bash
# Processor throughput: envelopes/s consumed from a pre-filled topic through lap-performance
# with RocksDB state and 1 s checkpoints, against a bare rdkafka consumer that only counts the
# same records, both measured in this run on this machine.
#
#   bench/processor.sh [ENVELOPES]      (default 5,000,000; needs ~2 GB in /tmp)
#
# It starts its own broker (scripts/stack.sh, memory storage) on a free port, publishes a
# simulated dataset as Avro single objects (the gateway's format), runs the baseline and the
# processor `--until-end` (with and without the state changelog), prints the rates and ratios, and
# stops the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-5000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
# The release profile (what the tests build): a dist build would compile RocksDB a second time.
cargo build --locked --release -p pitgun -p pitgun-bench --features pitgun/live,pitgun-bench/live >&2
PITGUN="$CARGO_TARGET_DIR/release/pitgun"
BENCH="$CARGO_TARGET_DIR/release/pitgun-bench"
OUT="${BENCH_OUT:-bench/out}"
mkdir -p "$OUT"
STACK="$(mktemp -d /tmp/pitgun-bench-stack.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
trap 'bash scripts/stack.sh down --dir "$STACK"; rm -rf "$STACK"' EXIT
bash scripts/stack.sh broker start --dir "$STACK" --broker-port "$PORT"
export PITGUN_BROKERS="127.0.0.1:$PORT" PITGUN_NAMESPACE="bench"
bash scripts/stack.sh topics --dir "$STACK" --broker-port "$PORT" --namespace bench --partitions 4

# 60 Hz samples + 1 Hz health per session: sessions × duration sized to N envelopes.
DATA="$OUT/processor-$N.ndjson.zst"
if [ ! -f "$DATA" ]; then
  SESSIONS=200
  SECONDS_PER_SESSION=$(( N / SESSIONS / 61 + 1 ))
  "$PITGUN" simulate --quiet --seed 1 --sessions "$SESSIONS" --duration "${SECONDS_PER_SESSION}s" --output "$DATA"
fi
"$PITGUN" publish --input "$DATA" --wire avro

bash bench/machine.sh
# A shared machine only ever slows a run down, so each side gets several runs and its fastest
# counts; the baseline gets one more than the processor, and one of them with mimalloc's own
# defaults (pitgun sets its allocator options for the processor; the bare consumer gets to run
# either way). Every run is printed.
# CPU seconds (user + system) of each run and of the broker during it: on 2 cores the processor
# is CPU-bound, so its ratio to the bare consumer is bounded by their CPU per record.
BROKER_PID="$(cat "$STACK/broker.pid")"
broker_cpu() { awk '{printf "%.2f", ($14 + $15) / '"$(getconf CLK_TCK)"'}' "/proc/$BROKER_PID/stat"; }
cpu() { awk '/User time/{u=$NF} /System time/{s=$NF} END{printf "%.2f", u + s}' "$1"; }
BASES=()
for env in "" "MIMALLOC_ALLOW_THP=1 MIMALLOC_PURGE_DELAY=10" ""; do
  B0="$(broker_cpu)"
  B="$(env $env /usr/bin/time -v "$BENCH" consume 2> "$OUT/consume-stderr.log")"
  echo "bare consumer${env:+ ($env)}: $B; CPU $(cpu "$OUT/consume-stderr.log") s, broker CPU $(python3 -c "print(round($(broker_cpu) - $B0, 2))") s"
  BASES+=("$B")
done
# Each processor run has its own consumer group and an empty state folder, so each reads the whole
# topic; runs with the state changelog (the default) and without (--no-changelog) alternate.
PROCS=()
OFFS=()
for run in 1 2 3; do
  for mode in changelog off; do
    STATE="$(mktemp -d /tmp/pitgun-bench-state.XXXXXX)"
    EXTRA=(--consumer-config "group.id=bench.processor.$mode.$run.$$")
    [ "$mode" = off ] && EXTRA+=(--no-changelog)
    B0="$(broker_cpu)"
    /usr/bin/time -v "$PITGUN" process --manifest manifests/pipelines/lap-performance.v1.yaml \
      --state-dir "$STATE" --checkpoint-interval 1s --until-end "${EXTRA[@]}" > "$OUT/processor-summary.json" 2> "$OUT/processor-stderr.log"
    P="$(cat "$OUT/processor-summary.json")"
    echo "processor run $run ($mode): $P; CPU $(cpu "$OUT/processor-stderr.log") s, broker CPU $(python3 -c "print(round($(broker_cpu) - $B0, 2))") s"
    grep -E "Maximum resident|Elapsed" "$OUT/processor-stderr.log" || true
    if [ "$mode" = off ]; then OFFS+=("$P"); else PROCS+=("$P"); fi
    rm -rf "$STATE"
  done
done
# The engine alone (decode, resolve, windows; no Kafka) on the first million envelopes, one thread.
echo "engine alone: $("$BENCH" engine --manifest manifests/pipelines/lap-performance.v1.yaml --input "$DATA" --limit 1000000)"
BASE="$(printf '%s\n' "${BASES[@]}" | python3 -c 'import json,sys; print(json.dumps(max((json.loads(l) for l in sys.stdin), key=lambda b: b["records_per_second"])))')"
fastest() { printf '%s\n' "$@" | python3 -c 'import json,sys; print(json.dumps(min((json.loads(l) for l in sys.stdin), key=lambda p: p["consume_seconds"])))'; }
PROC="$(fastest "${PROCS[@]}")"
OFF="$(fastest "${OFFS[@]}")"
python3 - "$BASE" "$PROC" "$OFF" <<'PY'
import json, sys
b, p, o = (json.loads(a) for a in sys.argv[1:4])
for name, r in (("processor", p), ("processor --no-changelog", o)):
    rate = r["records"] / r["consume_seconds"]
    print(f"fastest {name}: {rate:,.0f} envelopes/s ({r['records']:,} records, {r['rows']:,} rows, {r['checkpoints']} checkpoints, "
          f"{r.get('changelog_bytes', 0) / 1e6:,.1f} MB to the changelog); ratio to the bare consumer {rate / b['records_per_second']:.2f}")
print(f"fastest bare consumer {b['records_per_second']:,.0f} records/s")
PY
