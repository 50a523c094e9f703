#!/usr/bin/env bash
# Performance API: requests/s and latency of GET /v1/leaderboard over 100,000 runs, against
# GET /healthz (the same HTTP stack, no database) measured in the same run.
#
#   bench/api.sh [RUNS] [CONCURRENCY]     (defaults 100000 and 4)
#
# BENCH_TOP_RUNS=K adds K runs per track by one player, all faster than anyone else's: the
# ranking's first rows are then that player's alone.
# Starts its own PostgreSQL (scripts/stack.sh) on a free port; the sink creates the tables
# (`pitgun sink --migrate`), SQL fills `runs` with RUNS generated runs (500 players, 8 tracks,
# 4 cars, one in 17 without a complete lap; deterministic), then `pitgun api` serves them and
# `pitgun-bench http` keeps CONCURRENCY requests in flight for 10 s, cycling over every
# track, with and without a car filter. Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"; C="${2:-4}"
. bench/lib.sh api
PG_PORT="$(free_port)"; API="127.0.0.1:$(free_port)"
API_PID=""
trap '[ -n "$API_PID" ] && kill "$API_PID" 2>/dev/null; bash scripts/stack.sh down --dir "$STACK"; rm -rf "$STACK"' EXIT
bash scripts/stack.sh postgres start --dir "$STACK" --pg-port "$PG_PORT"
PG="postgres://pitgun:pitgun@127.0.0.1:$PG_PORT/pitgun"
"$PITGUN" sink --migrate --targets postgres --postgres "$PG" \
  --manifest manifests/pipelines/session-summary.v1.yaml --manifest manifests/pipelines/lap-performance.v1.yaml >/dev/null
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$PG" <<SQL
INSERT INTO runs (session_id, player, track, car, started_at, ended_at, total_time_s, laps, best_lap_s, top_speed_kmh, distance_km, events, missing_events, row_id)
SELECT 'bench-' || i, 'player-' || lpad(((hashint4(i) & 1023) % 500)::text, 3, '0'), 'track-' || (i % 8), 'car-' || ((i / 8) % 4),
       timestamptz '2026-01-01 00:00:00Z' + i * interval '37 seconds', timestamptz '2026-01-01 00:30:00Z' + i * interval '37 seconds',
       1800, 12, CASE WHEN i % 17 = 0 THEN NULL ELSE 80 + ((hashint4(i * 7) & 65535) / 1000.0) END, 310.5, 90.2, 36000, 0, 'row-' || i
FROM generate_series(1, $N) AS i;
INSERT INTO runs (session_id, player, track, car, started_at, ended_at, total_time_s, laps, best_lap_s, top_speed_kmh, distance_km, events, missing_events, row_id)
SELECT 'bench-top-' || i, 'player-top', 'track-' || (i % 8), 'car-' || ((i / 8) % 4),
       timestamptz '2025-01-01 00:00:00Z' + i * interval '37 seconds', timestamptz '2025-01-01 00:30:00Z' + i * interval '37 seconds',
       1800, 12, 70 + (i % 1000) / 1000.0, 310.5, 90.2, 36000, 0, 'row-top-' || i
FROM generate_series(1, ${BENCH_TOP_RUNS:-0} * 8) AS i;
ANALYZE runs;
SQL
bash bench/machine.sh
echo "PostgreSQL $("$PG_BIN/psql" -X -tA "$PG" -c 'SHOW server_version'): $("$PG_BIN/psql" -X -tA "$PG" -c 'SELECT count(*) FROM runs') runs"
"$PITGUN" api --postgres "$PG" --listen "$API" --connections 8 2>"$STACK/api.log" &
API_PID=$!
for _ in $(seq 1 100); do curl -fs "http://$API/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
PATHS=()
for t in 0 1 2 3 4 5 6 7; do
  PATHS+=(--path "/v1/leaderboard?track=track-$t&limit=10")
  PATHS+=(--path "/v1/leaderboard?track=track-$t&car=car-$((t % 4))&limit=10")
done
echo "healthz (baseline): $("$BENCH" http --addr "$API" --path /healthz --concurrency "$C" --duration 10s)"
echo "leaderboard: $("$BENCH" http --addr "$API" "${PATHS[@]}" --concurrency "$C" --duration 10s)"
