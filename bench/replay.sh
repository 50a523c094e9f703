#!/usr/bin/env bash
# Replay benchmark (issue: "Speed"): ≥ 5 million envelopes from `pitgun simulate`, replayed through
# lap-performance (with its derived formulas) and client-health on 1 and 2 threads, against two
# baselines measured in the same run on the same file:
#   - the floor: parsing every envelope with serde_json into the contract type, nothing else;
#   - DuckDB computing client-health's tumbling aggregates over the same NDJSON, in three pairs
#     alternating with client-health on 2 threads (the median ratio is the figure).
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
bash bench/machine.sh
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
# Side by side: client-health on 2 threads and DuckDB, alternating, three pairs. On a shared VM a
# neighbour can take a core for a minute; alternating slows both sides of a pair alike, and the
# median of the pairs' ratios is the figure.
RATIOS=""
for pair in 1 2 3; do
  OURS="$("$P" replay --threads 2 --manifest manifests/pipelines/client-health.v1.yaml --input "$DATA" \
    --output "$OUT/client-health.pair.ndjson" 2>&1 | sed -n 's/^replay:.*: \([0-9]*\) events\/s.*/\1/p')"
  cmp -s "$OUT/client-health.pair.ndjson" "$OUT/client-health.t2.ndjson" || { echo "pair $pair: rows differ" >&2; exit 1; }
  # Not `tee /dev/stderr`: reopening stderr truncates it when it is a log file, erasing the run.
  SAID="$(python3 bench/duckdb_client_health.py "$DATA")"
  echo "$SAID" >&2
  THEIRS="$(sed -n 's/.*: \([0-9]*\) envelopes\/s$/\1/p' <<< "$SAID")"
  RATIO="$(python3 -c "print(f'{$OURS / $THEIRS:.2f}')")"
  echo "pair $pair: pitgun client-health $OURS/s, DuckDB $THEIRS/s, ratio $RATIO"
  RATIOS="$RATIOS $RATIO"
done
python3 -c "import statistics, sys; print(f'client-health against DuckDB, 2 threads: median ratio {statistics.median(map(float, sys.argv[1:])):.2f} of pairs', *sys.argv[1:])" $RATIOS
