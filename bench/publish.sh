#!/usr/bin/env bash
# Backfill throughput: `pitgun publish --wire avro` (read the NDJSON dataset, check every
# envelope as the gateway does short of the dictionary, encode Avro, produce idempotently with
# acks=all) against a bare producer with the same settings sending the same records, encoded
# beforehand (`pitgun-bench produce`), both measured in this run on this machine.
#
#   bench/publish.sh [ENVELOPES]      (default 1,000,000; the topics live in the broker's memory)
#
# Starts its own broker (scripts/stack.sh, memory storage) on a free port; each run writes a
# topic of its own (4 partitions); the two sides alternate, three runs each, and each side's
# fastest counts. Prints every run, the rates and the ratio, and stops the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
. bench/lib.sh publish
PORT="$(free_port)"
trap 'bash scripts/stack.sh down --dir "$STACK"; rm -rf "$STACK"' EXIT
bash scripts/stack.sh broker start --dir "$STACK" --broker-port "$PORT"
export PITGUN_BROKERS="127.0.0.1:$PORT" PITGUN_NAMESPACE="bench"
NISSHI="$(command -v nisshi || echo "$HOME/.cargo/bin/nisshi")"

OUT="${BENCH_OUT:-bench/out}"; mkdir -p "$OUT"
# 60 Hz samples + 1 Hz health per session: 200 sessions × duration sized to N envelopes.
DATA="$OUT/publish-$N.ndjson.zst"
[ -f "$DATA" ] || "$PITGUN" simulate --quiet --seed 1 --sessions 200 --duration "$(( N / 200 / 61 + 1 ))s" --output "$DATA"

bash bench/machine.sh
# Each run's topic (base name; the namespace adds `bench.`), created before it is timed.
topic() { "$NISSHI" topic create --silent --broker "tcp://127.0.0.1:$PORT" --partitions 4 "bench.$1" >/dev/null; }
BARE=(); PUB=()
for run in 1 2 3; do
  topic "produce.$run"
  B="$("$BENCH" produce --input "$DATA" --topic "produce.$run")"
  echo "bare producer run $run: $B"
  BARE+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["records_per_second"])' "$B")")
  topic "publish.$run"
  if ! "$PITGUN" publish --input "$DATA" --wire avro --topic "publish.$run" 2> "$OUT/publish-stderr.log"; then
    cat "$OUT/publish-stderr.log" >&2; exit 1
  fi
  P="$(grep '^publish:' "$OUT/publish-stderr.log")"
  echo "pitgun publish run $run: $P"
  PUB+=("$(echo "$P" | sed -nE 's/.*\(([0-9]+)\/s\).*/\1/p')")
done
python3 - "${BARE[*]}" "${PUB[*]}" <<'PY'
import sys
bare, pub = max(map(float, sys.argv[1].split())), max(map(float, sys.argv[2].split()))
print(f"fastest bare producer {bare:,.0f} records/s; fastest pitgun publish {pub:,.0f} envelopes/s; ratio {pub / bare:.2f}")
PY
