#!/usr/bin/env python3
"""End-to-end latency: from the gateway's 202 for the event that moves a session's watermark past
a window's end, to that window's row on the aggregates topic.

Driven by bench/latency.sh (which starts the broker, the gateway and the processor). Posts
client-health events for SESSIONS sessions in real time (event time = now, one event per session
every TICK seconds, all sessions in one NDJSON batch per tick), follows the aggregates topic with
`pitgun tail`, and for every window row finds the first post whose event moved that session's
watermark (max event time - out-of-orderness) to or past the window's end. It also reads the
gateway's accepted-envelopes counter before and after posting, so the background load the script
ran beside it (bench/latency.sh) is reported as the rate the gateway actually acknowledged.
"""
import datetime
import http.client
import json
import subprocess
import sys
import threading
import time

pitgun, gateway, token, topic, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
SESSIONS, TICK, OOO_US = 20, 0.25, 2_000_000  # client-health: out_of_orderness 2s, 10s windows

rows = {}  # row_id -> (arrival, session_id, window_end_us)
tail = subprocess.Popen([pitgun, "tail", "--topic", topic], stdout=subprocess.PIPE, text=True)


def follow():
    for line in tail.stdout:
        now = time.time()
        r = json.loads(line)
        if r["row_id"] not in rows:
            end = datetime.datetime.fromisoformat(r["window_end"].replace("Z", "+00:00")).timestamp()
            rows[r["row_id"]] = (now, r["session_id"], round(end * 1e6))


threading.Thread(target=follow, daemon=True).start()
time.sleep(2)  # the tail joins the topic at its end

host, port = gateway.replace("http://", "").split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=10)


def accepted():
    """The gateway's count of broker-acknowledged envelopes, from its /metrics."""
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return next(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith("pitgun_gateway_envelopes_accepted_total"))


accepted_before, posting_from = accepted(), time.time()
posts = {f"lat-{i}": [] for i in range(SESSIONS)}  # session -> [(event_time_us, t202)]
seq = 0
stop_at = time.time() + seconds
while time.time() < stop_at:
    tick = time.time()
    t_us = int(tick * 1e6)
    seq += 1
    lines = []
    for i, s in enumerate(posts):
        lines.append(json.dumps({
            "schema": "pitgun-envelope/v1", "event_id": f"{s}-{seq}", "source": {"kind": "simulator", "id": "pitgun-sim", "version": "2.1.0"},
            "session_id": s, "seq": seq, "time_us": t_us, "kind": "health",
            "channels": {"render_fps": 60 - (seq % 7), "frame_time": 0.016, "net_rtt": 20 + i, "frames_dropped": seq // 10},
            "dims": {"player": f"p{i}", "track": "monza", "car": "gt3"}}))
    conn.request("POST", "/v1/envelopes", "\n".join(lines), {"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read()
    t202 = time.time()
    if resp.status != 202:
        sys.exit(f"gateway answered {resp.status}: {body[:300]!r}")
    for s in posts:
        posts[s].append((t_us, t202))
    time.sleep(max(0.0, TICK - (time.time() - tick)))
gateway_rate = (accepted() - accepted_before) / (time.time() - posting_from)
time.sleep(3)
tail.terminate()

lat = []
for row_id, (arrival, session, end_us) in rows.items():
    trigger = next((t202 for (t_us, t202) in posts.get(session, []) if t_us - OOO_US >= end_us), None)
    if trigger is not None:
        lat.append(arrival - trigger)
lat.sort()
if not lat:
    sys.exit("no window closed during the run")
pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(json.dumps({"gateway_envelopes_per_second": round(gateway_rate), "windows": len(lat), "p50_ms": round(pct(0.5) * 1000, 1), "p99_ms": round(pct(0.99) * 1000, 1), "max_ms": round(lat[-1] * 1000, 1)}))
