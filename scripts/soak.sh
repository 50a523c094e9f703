#!/usr/bin/env bash
# The fault soak: the whole live stack (gateway, two lap-performance replicas and a
# session-summary processor, two sinks into PostgreSQL and the QuestDB stand-in) under the
# simulator's load for DURATION seconds, with faults injected at seeded random times — SIGKILL of
# a processor, a sink or the gateway, the broker restarted, PostgreSQL restarted, QuestDB
# answering 500/503 or dropping connections, one processor's state directory full. At the end
# PostgreSQL and the QuestDB stand-in must equal replay of the exported envelopes topic, and every
# envelope the gateway answered 202 must be on the topic. The driver is cli/tests/soak.rs.
#
#   bash scripts/soak.sh [DURATION_SECONDS]    (default 180; PITGUN_TEST_SEED picks the faults)
#
# It starts a stack of its own (nothing is shared with scripts/test.sh's): a broker whose topics
# live in a PostgreSQL cluster of their own (so they survive the broker's restart), a second
# PostgreSQL for the sink (restarted as a fault without taking the broker's storage with it),
# and, when run as root, a 256 MiB tmpfs for one replica's state directory (filled as a fault;
# without root that fault is left out and the script says so). Everything is stopped by recorded
# process ids on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL="${1:-180}"
[[ "$SECONDS_TOTAL" =~ ^[0-9]+$ ]] && [ "$SECONDS_TOTAL" -ge 60 ] || { echo "soak.sh: DURATION_SECONDS must be a whole number ≥ 60 (got '$SECONDS_TOTAL')" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
export PITGUN_TEST_SEED="${PITGUN_TEST_SEED:-20261126}"

bash scripts/stack.sh install
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
BROKER_STACK="$(mktemp -d /tmp/pitgun-soak-broker.XXXXXX)"
DATA_STACK="$(mktemp -d /tmp/pitgun-soak-data.XXXXXX)"
DISK="$(mktemp -d /tmp/pitgun-soak-disk.XXXXXX)"
BROKER_PORT="$(free_port)"
BROKER_PG_PORT="$(free_port)"
DATA_PG_PORT="$(free_port)"
MOUNTED=0
cleanup() {
  # The soak's services run the copied binary: whatever is left of them (a test killed midway)
  # goes first, so nothing holds the small disk or the ports.
  pkill -KILL -f "^$DATA_STACK/pitgun " 2>/dev/null || true
  bash scripts/stack.sh down --dir "$BROKER_STACK" || true
  bash scripts/stack.sh down --dir "$DATA_STACK" || true
  if [ "$MOUNTED" = 1 ]; then
    umount "$DISK" || umount -l "$DISK" || echo "soak.sh: could not unmount $DISK" >&2
  fi
  rm -rf "$BROKER_STACK" "$DATA_STACK"
  rmdir "$DISK" 2>/dev/null || true
}
trap cleanup EXIT

bash scripts/stack.sh up --dir "$BROKER_STACK" --broker-port "$BROKER_PORT" --pg-port "$BROKER_PG_PORT" \
  --broker-storage postgres --rebalance-delay 300ms
bash scripts/stack.sh postgres start --dir "$DATA_STACK" --pg-port "$DATA_PG_PORT"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=256m tmpfs "$DISK"; then
  MOUNTED=1
  export PITGUN_SOAK_SMALL_DISK="$DISK"
else
  echo "soak.sh: not root (or tmpfs cannot be mounted): the full-disk fault is left out of this soak" >&2
fi

export PITGUN_TEST_BROKERS="127.0.0.1:$BROKER_PORT"
export PITGUN_TEST_POSTGRES="postgres://pitgun:pitgun@127.0.0.1:$DATA_PG_PORT/pitgun"
export PITGUN_SOAK_SECONDS="$SECONDS_TOTAL"
# How the driver restarts the broker and the sink's PostgreSQL: the same script, same options.
export PITGUN_SOAK_BROKER="broker --dir $BROKER_STACK --broker-port $BROKER_PORT --pg-port $BROKER_PG_PORT --broker-storage postgres --rebalance-delay 300ms"
export PITGUN_SOAK_POSTGRES="postgres --dir $DATA_STACK --pg-port $DATA_PG_PORT"
# The soak runs a copy of the binary just built: a rebuild while it runs changes nothing it restarts.
# `--workspace`: the same features as the test command's build, so its artifacts are reused.
TEST=(cargo test --locked --workspace --profile ci --all-features --test soak)
"${TEST[@]}" --no-run
cp "$CARGO_TARGET_DIR/ci/pitgun" "$DATA_STACK/pitgun"
export PITGUN_TEST_BIN="$DATA_STACK/pitgun"
"${TEST[@]}" -- --ignored --nocapture --test-threads 1
