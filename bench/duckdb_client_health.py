"""DuckDB baseline: client-health's 10 s tumbling aggregates over the same NDJSON file.

Both producers are handled the way the dictionary says (channel names and units differ), so the
work is comparable to the manifest's: filter health events, convert, group by session, player and
window, and compute percentiles, min, mean, max, last and count.
"""
import sys
import time

import duckdb

path = sys.argv[1]
query = f"""
WITH health AS (
  SELECT session_id,
         dims->>'player' AS player,
         (time_us // 10000000) * 10000000 AS window_start,
         time_us, seq,
         coalesce(CAST(channels->>'fps' AS DOUBLE), CAST(channels->>'render_fps' AS DOUBLE)) AS fps,
         coalesce(CAST(channels->>'frame_ms' AS DOUBLE), CAST(channels->>'frame_time' AS DOUBLE) * 1000) AS frame_time,
         coalesce(CAST(channels->>'ping_ms' AS DOUBLE), CAST(channels->>'net_rtt' AS DOUBLE)) AS rtt,
         coalesce(CAST(channels->>'dropped_frames' AS BIGINT), CAST(channels->>'frames_dropped' AS BIGINT)) AS dropped
  FROM read_json('{path}', format = 'newline_delimited',
                 columns = {{session_id: 'VARCHAR', time_us: 'BIGINT', seq: 'BIGINT', kind: 'VARCHAR',
                             channels: 'JSON', dims: 'JSON'}})
  WHERE kind = 'health'
)
SELECT session_id, player, window_start,
       quantile_disc(fps, 0.5), quantile_disc(fps, 0.05), min(fps), quantile_disc(frame_time, 0.99),
       avg(rtt), max(rtt), arg_max(dropped, time_us), count(*)
FROM health GROUP BY ALL ORDER BY ALL
"""
con = duckdb.connect()
con.execute("SET threads TO 2")
started = time.perf_counter()
rows = con.execute(query).fetchall()
elapsed = time.perf_counter() - started
lines = sum(1 for _ in open(path, "rb"))
print(f"duckdb {duckdb.__version__} client-health: {len(rows)} rows from {lines} envelopes in {elapsed:.2f} s "
      f"on 2 threads: {lines / elapsed:.0f} envelopes/s")
