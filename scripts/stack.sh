#!/usr/bin/env bash
# The local stack: a Kafka-protocol broker (nisshi) and a PostgreSQL cluster, private to a state
# folder, started from nothing and stopped by the process ids recorded at start.
#
#   scripts/stack.sh install                     install what is missing (once per machine)
#   scripts/stack.sh up   [options]              install, start broker + PostgreSQL, create topics
#   scripts/stack.sh down [--dir D]              stop both (by recorded pid)
#   scripts/stack.sh broker   start|stop [options]
#   scripts/stack.sh postgres start|stop [options]
#   scripts/stack.sh topics   [options]          create the pitgun topics (idempotent)
#   scripts/stack.sh env      [--dir D]          print PITGUN_* variables for the running stack
#   scripts/stack.sh scrape   [--dir D] ADDR...  have the stack's Prometheus scrape these
#                                                `host:port` /metrics endpoints (replaces the list)
#
# Options (all have defaults, so `scripts/stack.sh up` alone gives a working local stack):
#   --dir D             state folder: pids, logs, PostgreSQL data   (default .stack)
#   --broker-port P     broker port on 127.0.0.1                   (default 9092)
#   --pg-port P         PostgreSQL port on 127.0.0.1                (default 54329)
#   --broker-storage S  memory | postgres (data kept across broker restarts; starts PostgreSQL)
#   --partitions N      partitions of the topics created            (default 4)
#   --namespace NS      prefix of topic names (as `pitgun --namespace`)
#   --rebalance-delay D how long a new consumer group's first rebalance waits (default 3s; tests
#                       use less so each test's group starts sooner)
#   --signal S          stop with this signal instead of the graceful one (broker: KILL for a
#                       crash; PostgreSQL: QUIT for an immediate shutdown, recovered at start)
#   --with-prometheus   also start Prometheus (Debian's) on 127.0.0.1:--prometheus-port,
#                       loading k8s/monitoring's alert rules and scraping the targets that
#                       `scripts/stack.sh scrape` lists (reread every 5 s)
#   --prometheus-port P Prometheus's port on 127.0.0.1                (default 9090)
#
# Every wait has a deadline (STACK_DEADLINE seconds, default 60); a service that does not answer
# in time is reported with the tail of its log and the script fails.
set -euo pipefail
cd "$(dirname "$0")/.."

NISSHI_VERSION=0.8.1
DIR=.stack
BROKER_PORT=9092
PG_PORT=54329
BROKER_STORAGE=memory
PARTITIONS=4
NAMESPACE=""
REBALANCE_DELAY=3s
WITH_PROMETHEUS=0
PROMETHEUS_PORT=9090
SIGNAL=""
DEADLINE="${STACK_DEADLINE:-60}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

log() { echo "stack: $*" >&2; }
die() { log "error: $*"; exit 1; }

ARGS=()
parse() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) DIR="$2"; shift 2 ;;
      --broker-port) BROKER_PORT="$2"; shift 2 ;;
      --pg-port) PG_PORT="$2"; shift 2 ;;
      --broker-storage) BROKER_STORAGE="$2"; shift 2 ;;
      --partitions) PARTITIONS="$2"; shift 2 ;;
      --namespace) NAMESPACE="$2"; shift 2 ;;
      --rebalance-delay) REBALANCE_DELAY="$2"; shift 2 ;;
      --with-prometheus) WITH_PROMETHEUS=1; shift ;;
      --signal) SIGNAL="$2"; shift 2 ;;
      --prometheus-port) PROMETHEUS_PORT="$2"; shift 2 ;;
      --*) die "unknown option $1 (see the top of scripts/stack.sh)" ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
}

# ---------------------------------------------------------------------------------------------
# install

install() {
  local missing=()
  command -v clang >/dev/null 2>&1 || [ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || missing+=(libclang-dev)
  [ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
  # promtool checks and tests k8s/monitoring's alert rules (scripts/k8s-check.sh).
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  # scripts/image.sh builds and runs the image without a daemon: buildah, podman with runc,
  # skopeo to read the exported archive, debootstrap for the base.
  for tool in buildah podman skopeo debootstrap runc; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
  done
  # The browser game (game/): Node.js with npm builds and tests it; the browser test drives
  # Debian's chromium (never a downloaded browser).
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  # The tests' Python tools (scripts/test-requirements.txt) live in a venv.
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
  fi
  if ! nisshi_bin >/dev/null; then
    log "building the nisshi $NISSHI_VERSION broker (once per machine, about 11 minutes on 2 cores)"
    cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version --quiet
  fi
  nisshi_bin >/dev/null || die "nisshi is not on PATH after cargo install"
  local venv="$HOME/.cache/pitgun/venv"
  if ! cmp -s scripts/test-requirements.txt "$venv/requirements.txt" 2>/dev/null; then
    log "installing the tests' Python tools into $venv (scripts/test-requirements.txt)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
    cp scripts/test-requirements.txt "$venv/requirements.txt"
  fi
}

nisshi_bin() {
  local b
  b="$(command -v nisshi 2>/dev/null || true)"
  [ -z "$b" ] && [ -x "$HOME/.cargo/bin/nisshi" ] && b="$HOME/.cargo/bin/nisshi"
  [ -n "$b" ] || return 1
  echo "$b"
}

# ---------------------------------------------------------------------------------------------
# waiting and stopping

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() { # wait_until DESCRIPTION LOGFILE COMMAND...
  local what="$1" logf="$2"; shift 2
  local end=$((SECONDS + DEADLINE))
  until "$@"; do
    if [ $SECONDS -ge $end ]; then
      log "$what did not answer within ${DEADLINE}s; last lines of $logf:"
      tail -n 20 "$logf" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

stop_pid() { # stop_pid NAME PIDFILE [SIGNAL]  (SIGTERM unless given)
  local name="$1" pidfile="$2" signal="${3:-TERM}"
  [ -f "$pidfile" ] || { log "$name: not running (no $pidfile)"; return 0; }
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$signal" "$pid" 2>/dev/null || true
    local end=$((SECONDS + DEADLINE))
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $end ]; then log "$name (pid $pid) ignored SIG$signal for ${DEADLINE}s; killing"; kill -KILL "$pid" 2>/dev/null || true; fi
      sleep 0.1
    done
    log "$name stopped (pid $pid)"
  fi
  rm -f "$pidfile"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: a private cluster in $DIR/pg, trust auth on 127.0.0.1 only, user and db `pitgun`.

pg_as() { # run as the postgres OS user when we are root (initdb refuses root)
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

pg_start() {
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL binaries not found in $PG_BIN (run: scripts/stack.sh install)"
  local data="$DIR/pg"
  if [ -f "$DIR/postgres.pid" ] && kill -0 "$(cat "$DIR/postgres.pid")" 2>/dev/null; then
    log "postgres already running (pid $(cat "$DIR/postgres.pid"), port $(cat "$DIR/postgres.port"))"; return 0
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown -R postgres "$DIR" && chmod 755 "$DIR"
    pg_as "'$PG_BIN/initdb' -D '$data' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >'$DIR/initdb.log' 2>&1" || { tail "$DIR/initdb.log" >&2; die "initdb failed"; }
  fi
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  : > "$DIR/postgres.log"; [ "$(id -u)" = 0 ] && chown postgres "$DIR/postgres.log"
  pg_as "'$PG_BIN/pg_ctl' -D '$data' -l '$DIR/postgres.log' -o \"-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='$data' -c fsync=off -c max_connections=200\" start -w -t $DEADLINE >/dev/null" \
    || { tail -n 20 "$DIR/postgres.log" >&2; die "PostgreSQL did not start"; }
  head -1 "$data/postmaster.pid" > "$DIR/postgres.pid"
  echo "$PG_PORT" > "$DIR/postgres.port"
  wait_until "PostgreSQL on port $PG_PORT" "$DIR/postgres.log" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
  "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='pitgun'" | grep -q 1 \
    || "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE ROLE pitgun LOGIN SUPERUSER PASSWORD 'pitgun'"
  "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='pitgun'" | grep -q 1 \
    || "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE pitgun OWNER pitgun"
  log "postgres up: postgres://pitgun:pitgun@127.0.0.1:$PG_PORT/pitgun (pid $(cat "$DIR/postgres.pid"))"
}

# SIGINT is PostgreSQL's fast shutdown: SIGTERM ("smart") would wait for every client to leave.
pg_stop() { stop_pid postgres "$DIR/postgres.pid" "${SIGNAL:-INT}"; }

# ---------------------------------------------------------------------------------------------
# Broker

broker_start() {
  local nisshi; nisshi="$(nisshi_bin)" || die "nisshi not installed (run: scripts/stack.sh install)"
  if [ -f "$DIR/broker.pid" ] && kill -0 "$(cat "$DIR/broker.pid")" 2>/dev/null; then
    log "broker already running (pid $(cat "$DIR/broker.pid"), port $(cat "$DIR/broker.port"))"; return 0
  fi
  port_open "$BROKER_PORT" && die "port $BROKER_PORT is taken by a process this stack did not start"
  local storage="memory://pitgun/"
  if [ "$BROKER_STORAGE" = postgres ]; then
    pg_start
    local db="broker_${BROKER_PORT}"
    "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 \
      || "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE $db OWNER pitgun"
    storage="postgres://pitgun:pitgun@127.0.0.1:$PG_PORT/$db?sslmode=disable"
  fi
  ( cd "$DIR" && exec nohup "$nisshi" broker \
      --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
      --group-initial-rebalance-delay "$REBALANCE_DELAY" \
      --storage-engine "$storage" >>"$DIR/broker.log" 2>&1 ) &
  echo $! > "$DIR/broker.pid"
  echo "$BROKER_PORT" > "$DIR/broker.port"
  wait_until "broker on port $BROKER_PORT" "$DIR/broker.log" port_open "$BROKER_PORT" || { broker_stop; exit 1; }
  wait_until "broker metadata on port $BROKER_PORT" "$DIR/broker.log" broker_answers || { broker_stop; exit 1; }
  log "broker up: 127.0.0.1:$BROKER_PORT ($BROKER_STORAGE storage, pid $(cat "$DIR/broker.pid"))"
}

# Debian's kcat links an older librdkafka whose version handshake this broker refuses, so the
# broker's own client answers the readiness question.
broker_answers() { timeout 5 "$(nisshi_bin)" topic list --broker "tcp://127.0.0.1:$BROKER_PORT" >/dev/null 2>&1; }

broker_stop() { stop_pid broker "$DIR/broker.pid" "${SIGNAL:-TERM}"; }

# ---------------------------------------------------------------------------------------------
# Prometheus: the alert rules of k8s/monitoring, and the targets listed in a file it rereads.

prometheus_start() {
  command -v prometheus >/dev/null || die "prometheus not installed (run: scripts/stack.sh install)"
  if [ -f "$DIR/prometheus.pid" ] && kill -0 "$(cat "$DIR/prometheus.pid")" 2>/dev/null; then
    log "prometheus already running (pid $(cat "$DIR/prometheus.pid"))"; return 0
  fi
  port_open "$PROMETHEUS_PORT" && die "port $PROMETHEUS_PORT is taken by a process this stack did not start"
  [ -f "$DIR/prometheus-targets.json" ] || echo '[]' > "$DIR/prometheus-targets.json"
  cat > "$DIR/prometheus.yml" <<YAML
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: ['$PWD/k8s/monitoring/pitgun-alerts.rules.yaml']
scrape_configs:
  - job_name: pitgun
    file_sd_configs: [{files: ['$DIR/prometheus-targets.json'], refresh_interval: 5s}]
YAML
  ( exec nohup prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prometheus-data" \
      --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >>"$DIR/prometheus.log" 2>&1 ) &
  echo $! > "$DIR/prometheus.pid"
  wait_until "Prometheus on port $PROMETHEUS_PORT" "$DIR/prometheus.log" port_open "$PROMETHEUS_PORT"
  log "prometheus up: http://127.0.0.1:$PROMETHEUS_PORT (pid $(cat "$DIR/prometheus.pid")); add targets with: scripts/stack.sh scrape --dir $DIR HOST:PORT..."
}

prometheus_stop() { stop_pid prometheus "$DIR/prometheus.pid"; }

scrape() {
  local list=""; for t in "${ARGS[@]}"; do list+="${list:+, }\"$t\""; done
  echo "[{\"targets\": [$list]}]" > "$DIR/prometheus-targets.json.part"
  mv "$DIR/prometheus-targets.json.part" "$DIR/prometheus-targets.json"
  log "prometheus scrapes: ${ARGS[*]:-nothing}"
}

topics() {
  local prefix=""; [ -n "$NAMESPACE" ] && prefix="$NAMESPACE."
  local nisshi; nisshi="$(nisshi_bin)" || die "nisshi not installed"
  for t in pitgun.envelopes.v1 pitgun.deadletter.ingest.v1 pitgun.deadletter.process.v1; do
    create_topic "$prefix$t" "$PARTITIONS"
  done
}

create_topic() { # create_topic NAME PARTITIONS — idempotent
  if timeout 10 "$(nisshi_bin)" topic list --broker "tcp://127.0.0.1:$BROKER_PORT" 2>/dev/null | grep -q "\"name\":\"$1\""; then
    return 0
  fi
  timeout 20 "$(nisshi_bin)" topic create --silent --broker "tcp://127.0.0.1:$BROKER_PORT" --partitions "$2" "$1" >/dev/null 2>>"$DIR/broker.log" \
    || die "could not create topic $1 (see $DIR/broker.log)"
  log "topic $1 ($2 partitions)"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  install) install ;;
  up) parse "$@"; install; pg_start; broker_start; topics
      [ "$WITH_PROMETHEUS" = 1 ] && prometheus_start
      log "ready; stop with: scripts/stack.sh down --dir $DIR" ;;
  down) parse "$@"; prometheus_stop; broker_stop; pg_stop ;;
  scrape) parse "$@"; scrape ;;
  broker) sub="${1:-}"; shift || true; parse "$@"
      case "$sub" in start) broker_start ;; stop) broker_stop ;; *) die "broker start|stop" ;; esac ;;
  postgres) sub="${1:-}"; shift || true; parse "$@"
      case "$sub" in start) pg_start ;; stop) pg_stop ;; *) die "postgres start|stop" ;; esac ;;
  topics) parse "$@"; topics ;;
  env) parse "$@"
      echo "PITGUN_BROKERS=127.0.0.1:$(cat "$DIR/broker.port" 2>/dev/null || echo "$BROKER_PORT")"
      echo "PITGUN_POSTGRES=postgres://pitgun:pitgun@127.0.0.1:$(cat "$DIR/postgres.port" 2>/dev/null || echo "$PG_PORT")/pitgun" ;;
 *) # The header comment, whole: every line from the second up to the first that is not one.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    case "$cmd" in ""|help|-h|--help) ;; *) echo "unknown command: $cmd" >&2; exit 2 ;; esac ;;
esac
