"""Writes N lap-performance rows (the JSON lines replay writes) and the same rows as CSV, for
bench/sink.sh: deterministic (seeded), every row its own row_id.

    python3 bench/sink_rows.py N ROWS.ndjson ROWS.csv
"""
import csv
import hashlib
import json
import random
import sys
from datetime import datetime, timedelta, timezone

COLUMNS = ["row_id", "session_id", "player", "track", "car", "window_start", "window_end", "window_anchor", "lap", "lap_time",
           "max_speed", "mean_speed", "full_throttle_share", "braking_share", "distance", "tyre_fl_p50",
           "tyre_fl_p90", "tyre_fr_p50", "tyre_fr_p90", "tyre_rl_p50", "tyre_rl_p90", "tyre_rr_p50", "tyre_rr_p90",
           "samples", "complete"]


def main():
    n, rows_path, csv_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rnd = random.Random(1)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    players = ["ana", "ivo", "dara", "ayla", "ken", "mia"]
    tracks = ["monza", "spa", "suzuka", "imola"]
    cars = ["gt3", "lmp2"]
    with open(rows_path, "w") as rows, open(csv_path, "w", newline="") as out:
        w = csv.writer(out)
        for i in range(n):
            session, lap = divmod(i, 20)
            start = t0 + timedelta(seconds=session * 3000 + lap * 100 + rnd.random())
            lap_time = round(90 + rnd.random() * 20, 6)
            end = start + timedelta(seconds=lap_time)
            row = {
                "row_id": hashlib.sha256(str(i).encode()).hexdigest(),
                "session_id": f"s-bench-{session}",
                "player": players[session % 6], "track": tracks[session % 4], "car": cars[session % 2],
                "window_start": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "window_end": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "window_anchor": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "lap": lap + 1, "lap_time": lap_time,
                "max_speed": round(250 + rnd.random() * 80, 4), "mean_speed": rnd.random() * 200 + 50,
                "full_throttle_share": rnd.random(), "braking_share": rnd.random() / 4,
                "distance": round(5000 + rnd.random() * 2000, 4),
            }
            for wheel in ["fl", "fr", "rl", "rr"]:
                row[f"tyre_{wheel}_p50"] = 60 + rnd.random() * 40
                row[f"tyre_{wheel}_p90"] = 70 + rnd.random() * 40
            row["samples"] = 2000 + rnd.randrange(200)
            row["complete"] = True
            rows.write(json.dumps(row, separators=(",", ":")) + "\n")
            w.writerow([str(row[c]).lower() if isinstance(row[c], bool) else row[c] for c in COLUMNS])


main()
