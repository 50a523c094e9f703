#!/usr/bin/env bash
# QuestDB target: ILP encoding rows/s (the official client's buffer, protocol v2, batches of
# 5,000) against serde_json writing the same rows, in the same run; the sink's row parse against
# serde_json's; and the sink's whole per-row path (JSON line → fields → cells → ILP).
#
#   bench/ilp.sh [ROWS]      (default 200,000 lap-performance rows from bench/sink_rows.py)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
cargo build --locked --release -p pitgun-bench --features live >&2
OUT="${BENCH_OUT:-bench/out}"; mkdir -p "$OUT"
ROWS="$OUT/sink-rows-$N.ndjson"
[ -f "$ROWS" ] || python3 bench/sink_rows.py "$N" "$ROWS" "$OUT/sink-rows-$N.csv"
bash bench/machine.sh
"$CARGO_TARGET_DIR/release/pitgun-bench" ilp --rows "$ROWS" --passes 5
