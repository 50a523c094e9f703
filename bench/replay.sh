#!/usr/bin/env bash
# Replay benchmark (issue: "Speed"): ≥ 5 million envelopes from `pitgun simulate`, replayed through
# lap-performance (with its derived formulas) and client-health on 1 and 2 threads, against two
# baselines measured in the same run on the same file:
#   - the floor: parsing every envelope with serde_json into the contract type, nothing else;
#   - DuckDB computing client-health's tumbling aggregates over the same NDJSON.
# Usage: bench/replay.sh            (BENCH_DIR=… to choose where the 2.4 GB dataset goes)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
OUT="${BENCH_DIR:-bench/out}"
mkdir -p "$OUT"
cargo build --locked --profile dist -p pitgun -p pitgun-bench >&2
P="$CARGO_TARGET_DIR/dist/pitgun"
BENCH="$CARGO_TARGET_DIR/dist/pitgun-bench"
DATA="$OUT/bench-100x820s-seed5.ndjson"
if [ ! -s "$DATA" ]; then
  "$P" simulate --sessions 100 --duration 820s --seed 5 --output "$DATA"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "dataset: $DATA ($(du -hL "$DATA" | cut -f1))"
cat "$DATA" > /dev/null   # warm the page cache so every pass reads from memory
"$BENCH" parse "$DATA"
for manifest in lap-performance client-health; do
  for threads in 1 2; do
    /usr/bin/time -f "  peak RSS %M KB, wall %e s" "$P" replay --threads "$threads" \
      --manifest "manifests/pipelines/$manifest.v1.yaml" --input "$DATA" --output "$OUT/$manifest.t$threads.ndjson" 2>&1 \
      | grep -E "^replay:|peak RSS" | sed "s/^replay:/$manifest:/"
  done
  cmp "$OUT/$manifest.t1.ndjson" "$OUT/$manifest.t2.ndjson" && echo "  1 and 2 threads: byte-identical rows"
done
if ! python3 -c "import duckdb" 2>/dev/null; then
  pip install --quiet duckdb >&2
fi
python3 bench/duckdb_client_health.py "$DATA"
