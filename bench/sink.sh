#!/usr/bin/env bash
# Sink throughput: lap-performance rows from the aggregates topic to committed upserts in
# PostgreSQL, against `psql \copy` of the same rows into an unindexed table, in the same run.
#
#   bench/sink.sh [ROWS]      (default 1,000,000; SINK_BATCH_ROWS=N sets --batch-rows, default 5000,
#                              SINK_PG_CONNECTIONS=N --pg-connections, default 2)
#
# Starts its own broker and PostgreSQL (scripts/stack.sh) on free ports, fills the topic with
# generated rows (bench/sink_rows.py, `pitgun publish --wire rows`), then times both and prints
# rows/s, the ratio, the row width and the server's fsync setting, and the CPU seconds each write
# cost PostgreSQL's backends (and the sink and the broker their own). Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
. bench/lib.sh sink
PORT="$(free_port)"; PG_PORT="$(free_port)"
trap 'bash scripts/stack.sh down --dir "$STACK"; rm -rf "$STACK"' EXIT
bash scripts/stack.sh broker start --dir "$STACK" --broker-port "$PORT"
bash scripts/stack.sh postgres start --dir "$STACK" --pg-port "$PG_PORT"
export PITGUN_BROKERS="127.0.0.1:$PORT" PITGUN_NAMESPACE="bench"
PG="postgres://pitgun:pitgun@127.0.0.1:$PG_PORT/pitgun"
NISSHI="$(command -v nisshi || echo "$HOME/.cargo/bin/nisshi")"
"$NISSHI" topic create --silent --broker "tcp://127.0.0.1:$PORT" --partitions 4 bench.pitgun.aggregates.lap-performance.v1 >/dev/null

OUT="${BENCH_OUT:-bench/out}"; mkdir -p "$OUT"
ROWS="$OUT/sink-rows-$N.ndjson"; CSV="$OUT/sink-rows-$N.csv"
[ -f "$ROWS" ] && [ -f "$CSV" ] || python3 bench/sink_rows.py "$N" "$ROWS" "$CSV"
"$PITGUN" publish --input "$ROWS" --wire rows --topic pitgun.aggregates.lap-performance.v1

bash bench/machine.sh
# CPU seconds of the PostgreSQL backends that have exited (the postmaster's reaped children):
# read before and after each write, whose backends exit with their client.
PG_PID="$(cat "$STACK/postgres.pid")"; BROKER_PID="$(cat "$STACK/broker.pid")"
pg_cpu() { sleep 0.5; awk -v tck="$(getconf CLK_TCK)" '{printf "%.2f\n", ($16 + $17) / tck}' "/proc/$PG_PID/stat"; }
echo "PostgreSQL: $("$PG_BIN/psql" -X -tA "$PG" -c 'SHOW server_version') fsync=$("$PG_BIN/psql" -X -tA "$PG" -c 'SHOW fsync') synchronous_commit=$("$PG_BIN/psql" -X -tA "$PG" -c 'SHOW synchronous_commit')"
# Baseline: the same rows, CSV, into a table of the same columns without any index.
COLS="row_id text, session_id text, player text, track text, car text, window_start timestamptz, window_end timestamptz, window_anchor timestamptz, lap bigint, lap_time double precision, max_speed double precision, mean_speed double precision, full_throttle_share double precision, braking_share double precision, distance double precision, tyre_fl_p50 double precision, tyre_fl_p90 double precision, tyre_fr_p50 double precision, tyre_fr_p90 double precision, tyre_rl_p50 double precision, tyre_rl_p90 double precision, tyre_rr_p50 double precision, tyre_rr_p90 double precision, samples bigint, complete boolean"
"$PG_BIN/psql" -X -q "$PG" -c "CREATE TABLE copy_baseline ($COLS); CHECKPOINT"
CPU0="$(pg_cpu)"; START=$(date +%s.%N)
"$PG_BIN/psql" -X -q "$PG" -c "\\copy copy_baseline FROM '$CSV' WITH (FORMAT csv)"
BASE_S=$(python3 -c "import time; print(time.time() - $START)")
CPU1="$(pg_cpu)"
echo "psql \\copy: $N rows in $BASE_S s"
# The same copy into a table with the sink's index (the primary key (session_id, row_id), which
# any upsert must keep unique and which serves reads by session): what a plain COPY costs with it.
"$PG_BIN/psql" -X -q "$PG" -c "CREATE TABLE copy_keyed ($COLS, PRIMARY KEY (session_id, row_id)); CHECKPOINT"
CPU2="$(pg_cpu)"; START=$(date +%s.%N)
"$PG_BIN/psql" -X -q "$PG" -c "\\copy copy_keyed FROM '$CSV' WITH (FORMAT csv)"
KEYED_S=$(python3 -c "import time; print(time.time() - $START)")
CPU3="$(pg_cpu)"
echo "psql \\copy into a table with the sink's key: $N rows in $KEYED_S s"
# The sink: from the topic to committed upserts, first row to last commit.
CPU4="$(pg_cpu)"; read -r BUT BST < <(awk '{print $14, $15}' "/proc/$BROKER_PID/stat")
SUMMARY="$(python3 bench/cputime.py "$OUT/sink-cpu.txt" "$PITGUN" sink --manifest manifests/pipelines/lap-performance.v1.yaml --postgres "$PG" --targets postgres --until-end --batch-rows "${SINK_BATCH_ROWS:-5000}" --pg-connections "${SINK_PG_CONNECTIONS:-2}" 2>"$OUT/sink-stderr.log")"
CPU5="$(pg_cpu)"; read -r BUT2 BST2 < <(awk '{print $14, $15}' "/proc/$BROKER_PID/stat")
BROKER_CPU="$(python3 -c "print(($BUT2 + $BST2 - $BUT - $BST) / $(getconf CLK_TCK))")"
echo "sink: $SUMMARY"
WIDTH="$("$PG_BIN/psql" -X -tA "$PG" -c 'SELECT round(avg(pg_column_size(t.*))) FROM lap_performance_v1 t')"
JSON_WIDTH="$(python3 -c "import os; print(round(os.path.getsize('$ROWS') / $N))")"
COUNT="$("$PG_BIN/psql" -X -tA "$PG" -c 'SELECT count(*) FROM lap_performance_v1')"
python3 - "$SUMMARY" "$BASE_S" "$N" "$WIDTH" "$JSON_WIDTH" "$COUNT" "$KEYED_S" "$CPU0 $CPU1 $CPU2 $CPU3 $CPU4 $CPU5 $(cat "$OUT/sink-cpu.txt") $BROKER_CPU" <<'PY'
import json, sys
s, base, n, width, jw, count = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
keyed = float(sys.argv[7])
assert count == n, f"table holds {count} rows, expected {n}"
sink = n / s["seconds"]
print(f"rows: {n:,} ({width} bytes per row in PostgreSQL, {jw} bytes of JSON); psql \\copy {n / base:,.0f} rows/s; "
      f"sink {sink:,.0f} rows/s ({s['batches']} batches); ratio {sink / (n / base):.2f}")
print(f"indexed \\copy {n / keyed:,.0f} rows/s: ratio {base / keyed:.2f} to the unindexed copy; the sink is {sink / (n / keyed):.2f} of it")
c = [float(x) for x in sys.argv[8].split()]
print(f"CPU seconds per million rows: PostgreSQL {(c[1] - c[0]) * 1e6 / n:.2f} (unindexed copy), {(c[3] - c[2]) * 1e6 / n:.2f} (keyed copy), "
      f"{(c[5] - c[4]) * 1e6 / n:.2f} (for the sink); the sink itself {c[6] * 1e6 / n:.2f}, the broker serving it {c[7] * 1e6 / n:.2f}")
PY
