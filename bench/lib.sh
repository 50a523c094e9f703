# Shared by the benchmarks that run services: builds pitgun and pitgun-bench, names the tools, makes a state
# folder and gives free ports. Source it from the repository root: `. bench/lib.sh NAME`.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
cargo build --locked --release -p pitgun -p pitgun-bench --features pitgun/live,pitgun-bench/live >&2
PITGUN="$CARGO_TARGET_DIR/release/pitgun"
BENCH="$CARGO_TARGET_DIR/release/pitgun-bench"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
STACK="$(mktemp -d "/tmp/pitgun-bench-$1.XXXXXX")"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
