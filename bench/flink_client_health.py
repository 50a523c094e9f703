"""Flink baseline: client-health's 10 s tumbling aggregates in PyFlink SQL, streaming mode.

The same work as the manifest and as bench/duckdb_client_health.py: keep health events, read
either producer's channel names in the dictionary's units, and per session, player and 10 s
event-time window compute the 50th and 5th percentile and minimum of fps, the 99th percentile of
frame time, mean and max round trip, the last dropped-frame counter and the count. Event time
comes from `time_us` with the manifest's 2 s out-of-orderness as the watermark.

Usage: python flink_client_health.py DIR   (every NDJSON file in DIR; the job runs with
parallelism 2, one file per source reader). A warm-up job over the first file's first lines runs
before the timed one, so the figure leaves out starting the JVM and the local cluster.
"""
import os
import sys
import tempfile
import time

from pyflink.table import EnvironmentSettings, TableEnvironment
from pyflink.version import __version__ as flink_version

source_dir = os.path.abspath(sys.argv[1])
files = sorted(os.path.join(source_dir, f) for f in os.listdir(source_dir) if f.endswith(".ndjson"))
lines = sum(sum(1 for _ in open(f, "rb")) for f in files)

env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
env.get_config().set("parallelism.default", "2")


def job(path: str, name: str) -> str:
    # Only the fields the query reads are declared; the JSON format skips the others.
    env.execute_sql(f"""
        CREATE TEMPORARY TABLE {name} (
          session_id STRING,
          time_us BIGINT,
          kind STRING,
          channels ROW<fps DOUBLE, render_fps DOUBLE, frame_ms DOUBLE, frame_time DOUBLE,
                       ping_ms DOUBLE, net_rtt DOUBLE, dropped_frames DOUBLE, frames_dropped DOUBLE>,
          dims ROW<player STRING>,
          ts AS TO_TIMESTAMP_LTZ(time_us / 1000, 3),
          WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
        ) WITH ('connector' = 'filesystem', 'path' = 'file://{path}', 'format' = 'json')""")
    env.execute_sql(f"""
        CREATE TEMPORARY VIEW {name}_health AS
        SELECT session_id, dims.player AS player, ts,
               COALESCE(channels.fps, channels.render_fps) AS fps,
               COALESCE(channels.frame_ms, channels.frame_time * 1000) AS frame_time,
               COALESCE(channels.ping_ms, channels.net_rtt) AS rtt,
               COALESCE(channels.dropped_frames, channels.frames_dropped) AS dropped
        FROM {name} WHERE kind = 'health'""")
    return f"""
        SELECT session_id, player, window_start,
               PERCENTILE(fps, 0.5), PERCENTILE(fps, 0.05), MIN(fps), PERCENTILE(frame_time, 0.99),
               AVG(rtt), MAX(rtt), LAST_VALUE(dropped), COUNT(*)
        FROM TABLE(TUMBLE(TABLE {name}_health, DESCRIPTOR(ts), INTERVAL '10' SECOND))
        GROUP BY window_start, window_end, session_id, player"""


def run(query: str) -> int:
    with env.execute_sql(query).collect() as results:
        return sum(1 for _ in results)


with tempfile.TemporaryDirectory() as warm:
    with open(files[0], "rb") as src, open(os.path.join(warm, "head.ndjson"), "wb") as dst:
        for _, line in zip(range(20000), src):
            dst.write(line)
    run(job(warm, "warmup"))

query = job(source_dir, "envelopes")
started = time.perf_counter()
rows = run(query)
elapsed = time.perf_counter() - started
print(f"flink {flink_version} client-health: {rows} rows from {lines} envelopes in {elapsed:.2f} s "
      f"with parallelism 2: {lines / elapsed:.0f} envelopes/s")
