# Shared by the benchmarks that run services: builds pitgun and pitgun-bench, names the tools, makes a state
# folder and gives free ports. Source it from the repository root: `. bench/lib.sh NAME`.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
# BENCH_PROFILE picks the cargo profile (default release); BENCH_PITGUN runs another build's
# pitgun instead (an A/B against an older commit's binary).
PROFILE="${BENCH_PROFILE:-release}"
PROFILE_DIR="$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"   # cargo puts dev in debug/
cargo build --locked --profile "$PROFILE" -p pitgun -p pitgun-bench --features pitgun/live,pitgun-bench/live >&2
PITGUN="${BENCH_PITGUN:-$CARGO_TARGET_DIR/$PROFILE_DIR/pitgun}"
BENCH="$CARGO_TARGET_DIR/$PROFILE_DIR/pitgun-bench"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
STACK="$(mktemp -d "/tmp/pitgun-bench-$1.XXXXXX")"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
