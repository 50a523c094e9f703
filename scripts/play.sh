#!/usr/bin/env bash
# The browser game beside the whole live stack, in one command:
#
#   scripts/play.sh up     build pitgun (live) and the game, start the broker and PostgreSQL
#                          (scripts/stack.sh), the gateway, one processor per manifest
#                          (client-health, lap-performance, session-summary), the sink and the
#                          API serving the game; prints the address to open
#   scripts/play.sh down   stop everything it started (by recorded process ids)
#
# State, logs and pids go to .play/ (PLAY_DIR). Ports: API and game 127.0.0.1:8090, gateway
# 127.0.0.1:8080, broker 9092, PostgreSQL 54329 (the stack's defaults); the processors' metrics on
# 127.0.0.1:9464 (client-health), 9465 (lap-performance), 9466 (session-summary), the sink's on
# 9467. PLAY_SESSIONS_PER_MINUTE sets the API's per-address session quota (default 30; the
# players benchmark raises it, its bots all come from one address). Bots against it:
#   npm --prefix game run bots -- --players 20 --api http://127.0.0.1:8090
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${PLAY_DIR:-.play}"
API=127.0.0.1:8090
GATEWAY=127.0.0.1:8080
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
# PITGUN_BIN: a pitgun built with `--features live` to use instead of building one.
PITGUN="${PITGUN_BIN:-$CARGO_TARGET_DIR/release/pitgun}"
DEADLINE=60

log() { echo "play: $*" >&2; }
die() { log "error: $*"; exit 1; }

start() { # start NAME ARGS... — a pitgun service in the background, its pid recorded
  local name="$1"; shift
  ( exec nohup "$PITGUN" "$@" >>"$DIR/$name.log" 2>&1 ) &
  echo $! > "$DIR/$name.pid"
}

wait_for() { # wait_for NAME HOST:PORT
  local end=$((SECONDS + DEADLINE))
  until (exec 3<>"/dev/tcp/${2%:*}/${2#*:}") 2>/dev/null; do
    kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null || { tail -n 20 "$DIR/$1.log" >&2; die "$1 exited (log: $DIR/$1.log)"; }
    [ $SECONDS -lt $end ] || { tail -n 20 "$DIR/$1.log" >&2; die "$1 did not listen on $2 within ${DEADLINE}s"; }
    sleep 0.2
  done
}

wait_log() { # wait_log NAME TEXT
  local end=$((SECONDS + DEADLINE))
  until grep -q "$2" "$DIR/$1.log" 2>/dev/null; do
    kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null || { tail -n 20 "$DIR/$1.log" >&2; die "$1 exited (log: $DIR/$1.log)"; }
    [ $SECONDS -lt $end ] || { tail -n 20 "$DIR/$1.log" >&2; die "$1 did not log '$2' within ${DEADLINE}s"; }
    sleep 0.2
  done
}

up() {
  mkdir -p "$DIR"
  # PostgreSQL runs as its own user and must reach the stack folder inside this one.
  chmod go+x "$DIR"
  bash scripts/stack.sh up --dir "$DIR/stack"
  eval "$(bash scripts/stack.sh env --dir "$DIR/stack" | sed 's/^/export /')"
  if [ -z "${PITGUN_BIN:-}" ]; then
    log "building pitgun (live)"
    cargo build --locked --release -p pitgun --features live
  fi
  log "building the game"
  npm ci --prefix game --no-audit --no-fund >/dev/null
  npm --prefix game run build >/dev/null
  [ -f "$DIR/session.secret" ] || "$PITGUN" gateway session-secret --out "$DIR/session.secret"
  # A keys file the gateway needs; browsers use session tokens, services would use these keys.
  [ -f "$DIR/keys.yaml" ] || "$PITGUN" gateway keygen --source pitgun-sim --keys "$DIR/keys.yaml" > "$DIR/pitgun-sim.key"
  start gateway gateway --listen "$GATEWAY" --keys "$DIR/keys.yaml" --session-secret-file "$DIR/session.secret" --cors-origin "http://$API"
  local port=9464
  for m in client-health lap-performance session-summary; do
    start "process-$m" process --manifest "manifests/pipelines/$m.v1.yaml" --state-dir "$DIR/state-$m" --metrics-listen "127.0.0.1:$port"
    port=$((port + 1))
  done
  start sink sink --manifest manifests/pipelines/lap-performance.v1.yaml --manifest manifests/pipelines/session-summary.v1.yaml \
    --targets postgres --postgres "$PITGUN_POSTGRES" --metrics-listen "127.0.0.1:$port"
  wait_for gateway "$GATEWAY"
  wait_log sink "sink started"
  start api api --listen "$API" --postgres "$PITGUN_POSTGRES" --session-secret-file "$DIR/session.secret" \
    --gateway-url "http://$GATEWAY" --game game/dist --sessions-per-minute "${PLAY_SESSIONS_PER_MINUTE:-30}"
  wait_for api "$API"
  log "play at http://$API/play/ (logs in $DIR/; stop with scripts/play.sh down)"
}

down() {
  local name pid
  for f in "$DIR"/*.pid; do
    [ -e "$f" ] || continue
    name="$(basename "$f" .pid)"; pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      log "stopped $name (pid $pid)"
    fi
    rm -f "$f"
  done
  [ -d "$DIR/stack" ] && bash scripts/stack.sh down --dir "$DIR/stack"
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; [ -z "${1:-}" ] || exit 2 ;;
esac
