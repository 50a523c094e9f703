#!/usr/bin/env bash
# Replay against Flink (issue 18): client-health's aggregates over the same NDJSON dataset as
# bench/replay.sh, computed by PyFlink SQL in streaming mode (event-time tumbling windows, the
# manifest's 2 s watermark) and by `pitgun replay` on 2 threads, in the same run.
#
# Installs PyFlink itself (PyPI, pinned, into a virtualenv outside the clone) and runs it on the
# machine's Java (17 here; Flink 2 takes 11, 17 or 21). Flink reads the dataset split into two
# files, one per source reader, so both of its slots parse: a single JSON file is one split.
# Usage: bench/flink.sh            (BENCH_DIR=… for the dataset, FLINK_VENV=… for the virtualenv)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
OUT="${BENCH_DIR:-bench/out}"
VENV="${FLINK_VENV:-$HOME/.cache/pitgun/flink-venv}"
FLINK_VERSION=2.2.1
mkdir -p "$OUT"

command -v java >/dev/null || { echo "bench/flink.sh: Flink needs Java 11, 17 or 21 on PATH" >&2; exit 1; }
# The JVM says where it lives (a path through shims such as jenv's would not).
export JAVA_HOME="${JAVA_HOME:-$(java -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.home/{print $2}')}"
if ! "$VENV/bin/python" -c "import pyflink.version as v; assert v.__version__ == '$FLINK_VERSION'" 2>/dev/null; then
  python3 -c 'import sys; assert (3, 9) <= sys.version_info[:2] <= (3, 12), "PyFlink 2.2 takes Python 3.9 to 3.12"'
  python3 -m venv --clear "$VENV"   # Debian: needs python3-venv
  "$VENV/bin/pip" install --quiet "apache-flink==$FLINK_VERSION" >&2
fi

cargo build --locked --profile dist -p pitgun >&2
P="$CARGO_TARGET_DIR/dist/pitgun"
DATA="$OUT/bench-100x820s-seed5.ndjson"
if [ ! -s "$DATA" ]; then
  "$P" simulate --sessions 100 --duration 820s --seed 5 --output "$DATA"
fi
SPLIT="$OUT/flink-input"
if [ ! -d "$SPLIT" ] || [ "$(cat "$SPLIT.source" 2>/dev/null)" != "$(stat -L -c '%s %Y' "$DATA")" ]; then
  rm -rf "$SPLIT" && mkdir -p "$SPLIT"
  split -n l/2 -d --additional-suffix=.ndjson "$DATA" "$SPLIT/part-"
  stat -L -c '%s %Y' "$DATA" > "$SPLIT.source"
fi

bash bench/machine.sh; echo "java: $(java -version 2>&1 | head -1)"
echo "dataset: $DATA ($(du -hL "$DATA" | cut -f1))"
cat "$DATA" "$SPLIT"/part-* > /dev/null   # both copies in the page cache
PITGUN_RUN=$(/usr/bin/time -f "  peak RSS %M KB, wall %e s" "$P" replay --threads 2 \
  --manifest manifests/pipelines/client-health.v1.yaml --input "$DATA" --output "$OUT/client-health.flink-run.ndjson" 2>&1 \
  | grep -E "^replay:|peak RSS" | sed "s/^replay:/pitgun client-health:/")
echo "$PITGUN_RUN"
echo "  rows: $(wc -l < "$OUT/client-health.flink-run.ndjson")"
if ! /usr/bin/time -f "  peak RSS %M KB (python; the JVM is a child), wall %e s" "$VENV/bin/python" bench/flink_client_health.py "$SPLIT" > "$OUT/flink.log" 2>&1; then
  tail -40 "$OUT/flink.log" >&2
  echo "bench/flink.sh: the Flink job failed; its whole log is $OUT/flink.log" >&2
  exit 1
fi
FLINK_RUN=$(grep -E "^flink|peak RSS" "$OUT/flink.log")
echo "$FLINK_RUN"
# Ratio of throughputs: replay's own timer (manifest loaded to last record processed) against
# Flink's timed job alone (its JVM and cluster start are left out).
rate() { grep -oE '[0-9]+ (events|envelopes)/s' <<<"$1" | head -1 | cut -d' ' -f1; }
python3 -c "import sys; p, f = map(float, sys.argv[1:]); print(f'pitgun / flink: {p / f:.1f}x')" "$(rate "$PITGUN_RUN")" "$(rate "$FLINK_RUN")"
