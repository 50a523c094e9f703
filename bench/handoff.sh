#!/usr/bin/env bash
# State hand-off: one input partition holding SESSIONS open sessions (default 10,000) moves to a
# replica with an empty state folder, which restores it from the state changelog; against the
# fallback, a replica that rebuilds the same partition by reading its whole input (≥ 5 M
# envelopes by default) with --no-changelog. Both measured in this run, on this machine.
#
#   bench/handoff.sh [SESSIONS] [SECONDS_PER_SESSION]     (defaults 10000 and 9: ~5.5 M envelopes)
#
# Replica A reads the whole topic (lap-performance, 1 s checkpoints) and stops with its final
# checkpoint; every session is still open (the dataset has no session_end). Replica B (empty
# state) then takes the partition: hand-off = its restore, from the assignment to the state at
# the group's offset in its state folder, ready to go on. Replica C (empty state,
# --no-changelog) takes it next: rebuild = from the assignment until it caught up with the
# group's offset. Needs zstd and ~3 GB in /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS="${1:-10000}"
EACH="${2:-9}"
command -v zstd >/dev/null || { echo "bench/handoff.sh needs zstd (apt install zstd)" >&2; exit 1; }
. bench/lib.sh handoff
OUT="${BENCH_OUT:-bench/out}"
mkdir -p "$OUT"
PORT="$(free_port)"
METRICS="127.0.0.1:$(free_port)"
RUNS="$(mktemp -d /tmp/pitgun-handoff-runs.XXXXXX)"
trap 'for p in $(cat "$RUNS"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done; bash scripts/stack.sh down --dir "$STACK"; rm -rf "$STACK" "$RUNS"' EXIT
bash scripts/stack.sh broker start --dir "$STACK" --broker-port "$PORT" --rebalance-delay 100ms
export PITGUN_BROKERS="127.0.0.1:$PORT" PITGUN_NAMESPACE="handoff"
bash scripts/stack.sh topics --dir "$STACK" --broker-port "$PORT" --namespace handoff --partitions 1

# Sessions that never end: the simulator's sessions without their session_end events.
DATA="$OUT/handoff-$SESSIONS-$EACH.ndjson.zst"
if [ ! -f "$DATA" ]; then
  "$PITGUN" simulate --quiet --seed 3 --sessions "$SESSIONS" --duration "${EACH}s" --output "$RUNS/full.ndjson.zst"
  zstd -dcq "$RUNS/full.ndjson.zst" | grep -v '"kind":"session_end"' | zstd -q -o "$DATA"
  rm -f "$RUNS/full.ndjson.zst"
fi
ENVELOPES="$(zstd -dcq "$DATA" | wc -l)"
"$PITGUN" publish --input "$DATA" --wire avro >&2
bash bench/machine.sh
echo "input: $ENVELOPES envelopes of $SESSIONS sessions, one partition"

metric() { curl -s "http://$METRICS/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { print $2 }'; }
# Starts a replica in the background: NAME, then extra arguments.
replica() {
  local name="$1"; shift
  "$PITGUN" process --manifest manifests/pipelines/lap-performance.v1.yaml --state-dir "$RUNS/$name-state" \
    --checkpoint-interval 1s --metrics-listen "$METRICS" "$@" > "$RUNS/$name.json" 2> "$RUNS/$name.log" &
  echo $! > "$RUNS/$name.pid"
}
# Waits (deadline SECONDS) until the log of NAME has a line with TEXT.
wait_log() {
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$RUNS/$1.log"; do
    [ $SECONDS -lt $deadline ] || { echo "$1: no '$2' within $3 s" >&2; tail -5 "$RUNS/$1.log" >&2; exit 1; }
    sleep 0.2
  done
}
stop() {
  kill -TERM "$(cat "$RUNS/$1.pid")"
  wait "$(cat "$RUNS/$1.pid")" || { echo "$1 failed" >&2; tail -5 "$RUNS/$1.log" >&2; exit 1; }
  rm "$RUNS/$1.pid"
}

replica a
deadline=$((SECONDS + 600))
until [ "$(metric pitgun_processor_events_in_total)" = "$ENVELOPES" ]; do
  [ $SECONDS -lt $deadline ] || { echo "a: input not read within 600 s" >&2; exit 1; }
  sleep 0.5
done
stop a
echo "a: $(cat "$RUNS/a.json")"

replica b
wait_log b "restored from the changelog" 300
wait_log b "checkpoint written" 60
stop b
echo "b: $(cat "$RUNS/b.json")"

replica c --no-changelog
wait_log c "caught up with the group's committed offset" 900
stop c
echo "c: $(cat "$RUNS/c.json")"

python3 - "$RUNS" "$ENVELOPES" <<'PY'
import re, sys, datetime
runs, envelopes = sys.argv[1], int(sys.argv[2])
def lines(name):
    return open(f"{runs}/{name}.log").read().splitlines()
def at(line):
    return datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d*Z", r"\1+00:00", line.split()[0])).timestamp()
def field(line, name):
    return re.search(rf"\b{name}=([0-9.e+-]+)", line).group(1)
restore = next(l for l in lines("b") if "changelog restore" in l)
restored = next(l for l in lines("b") if "restored from the changelog" in l)
seconds, records, size = float(field(restore, "seconds")), int(field(restore, "records")), int(field(restore, "bytes"))
sessions = int(field(restored, "sessions"))
start = at(next(l for l in lines("c") if "rebuilding from the earliest offset" in l))
end = at(next(l for l in lines("c") if "caught up with the group's committed offset" in l))
rebuild = end - start
print(f"hand-off from the changelog: {sessions:,} open sessions in {seconds:.2f} s "
      f"({records:,} records, {size / 1e6:.1f} MB read: {records / seconds:,.0f} records/s, {size / 1e6 / seconds:.1f} MB/s)")
print(f"rebuild from the earliest offset: {envelopes:,} envelopes in {rebuild:.2f} s ({envelopes / rebuild:,.0f} envelopes/s)")
print(f"hand-off is {rebuild / seconds:.1f}x faster than the rebuild")
PY
