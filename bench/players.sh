#!/usr/bin/env bash
# Concurrent 60 Hz players this machine sustains: the game's headless bots (the page's own
# simulation and telemetry client, `npm --prefix game run bots`) against the whole live stack of
# `scripts/play.sh` (gateway, one processor per manifest, the sink writing PostgreSQL, the API),
# all on this machine, bots included.
#
#   bench/players.sh [PLAYERS...]        (default: 50 100 200 300 400 600; each step 60 s)
#
# Per step it reports the events/s the bots sent and the gateway acknowledged, 503s, the gateway's
# acknowledgement time (p50/p99, seen by the clients: request sent → 202 read), and the largest
# consumer lag of any processor during the step and at its end (records). A step is *sustained*
# when each bot kept its rate (events sent per player ≥ 95 % of the first, lightest step's: the
# baseline, measured in the same run, since Node's timers tick a little under 60 Hz even on an
# idle machine), nothing was refused or left unsent, and every processor caught up within 5 s
# after the step. PITGUN_BIN: a pitgun built with --features live (default: build the release
# binary).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=("${@:-50 100 200 300 400 600}")
read -r -a STEPS <<< "${STEPS[*]}"
DURATION="${PLAYERS_STEP:-60s}"
export PLAY_DIR="$(mktemp -d /tmp/pitgun-bench-players.XXXXXX)"
export PLAY_SESSIONS_PER_MINUTE=100000
cleanup() { bash scripts/play.sh down >/dev/null 2>&1 || true; rm -rf "$PLAY_DIR"; }
trap cleanup EXIT
bash scripts/play.sh up >&2
npm --prefix game run build >/dev/null   # the bots' bundle (dist-bots) comes with `npm run bots`

lag() { # the largest consumer lag over the three processors, records
  local max=0 v
  for port in 9464 9465 9466; do
    v="$(curl -s "127.0.0.1:$port/metrics" | awk '/^pitgun_processor_consumer_lag/ { s += $2 } END { print s + 0 }')"
    [ "$v" -gt "$max" ] && max="$v"
  done
  echo "$max"
}

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
printf '%-8s %-10s %-10s %-6s %-9s %-9s %-9s %-9s %s\n' players sent/s acked/s 503s ack_p50 ack_p99 lag_max lag_end sustained
# The bots run 1000-lap sessions, so every player stays on track for the whole step.
for n in "${STEPS[@]}"; do
  out="$PLAY_DIR/bots-$n.log"
  npm --prefix game run bots -- --players "$n" --api http://127.0.0.1:8090 --duration "$DURATION" --laps 1000 --seed "$n" > "$out" 2>&1 &
  bots=$!
  peak=0
  while kill -0 "$bots" 2>/dev/null; do
    l="$(lag)"; [ "$l" -gt "$peak" ] && peak="$l"
    sleep 2
  done
  wait "$bots" || true
  caught=no
  for _ in $(seq 10); do
    end_lag="$(lag)"
    [ "$end_lag" -eq 0 ] && { caught=yes; break; }
    sleep 0.5
  done
  python3 - "$out" "$n" "$peak" "$end_lag" "$caught" "$PLAY_DIR/baseline" <<'EOF'
import json, os, sys
path, n, peak, end_lag, caught, base_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
summary = None
for line in open(path):
    if line.startswith('{"summary"'):
        summary = json.loads(line)
if summary is None:
    print(f"{n:<8} the bots printed no summary (see {path})")
    sys.exit(0)
secs = summary["duration_s"]
sent = summary["events_sent"] / secs
acked = summary["accepted"] / secs
if not os.path.exists(base_file):
    open(base_file, "w").write(str(sent / n))
per_player_base = float(open(base_file).read())
ok = (sent / n >= 0.95 * per_player_base and summary["responses_503"] == 0 and summary["unsent_events"] == 0
      and summary["players"] == n and caught == "yes")
print(f"{n:<8} {sent:<10.0f} {acked:<10.0f} {summary['responses_503']:<6} {summary['ack_p50_ms']:<9.1f} "
      f"{summary['ack_p99_ms']:<9.1f} {peak:<9} {end_lag:<9} {'yes' if ok else 'no'}")
EOF
done
