#!/usr/bin/env bash
# The project's one test command (README, .ci/run). On a machine with nothing running it
# installs what is missing (scripts/stack.sh install), starts a private broker and PostgreSQL
# cluster on free ports in a temporary folder, builds with the committed Cargo.lock, runs every
# test against them, and stops both by the process ids it recorded — also when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
# Property tests and the live tests' random kill points run with fixed seeds (printed).
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261126}"
export PITGUN_TEST_SEED="${PITGUN_TEST_SEED:-20261126}"
echo "test.sh: CARGO_TARGET_DIR=$CARGO_TARGET_DIR PROPTEST_RNG_SEED=$PROPTEST_RNG_SEED PITGUN_TEST_SEED=$PITGUN_TEST_SEED"

# One format for the whole tree (rustfmt.toml): a file off it fails here, before any build.
cargo fmt --version > /dev/null 2>&1 || rustup component add rustfmt
cargo fmt --all --check

bash scripts/stack.sh install
# Licences, bans, sources and the RustSec advisories of the dependency tree (deny.toml).
bash scripts/deps-check.sh
# k8s/ renders, validates against the Kubernetes schemas and keeps its policies; the alert rules
# pass promtool's checks and tests (offline, under a minute).
bash scripts/k8s-check.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
STACK_DIR="$(mktemp -d /tmp/pitgun-test-stack.XXXXXX)"
BROKER_PORT="$(free_port)"
PG_PORT="$(free_port)"
cleanup() { bash scripts/stack.sh down --dir "$STACK_DIR" || true; }
trap cleanup EXIT
bash scripts/stack.sh up --dir "$STACK_DIR" --broker-port "$BROKER_PORT" --pg-port "$PG_PORT" --rebalance-delay 300ms
export PITGUN_TEST_BROKERS="127.0.0.1:$BROKER_PORT"
export PITGUN_TEST_POSTGRES="postgres://pitgun:pitgun@127.0.0.1:$PG_PORT/pitgun"
export PITGUN_TEST_PG_PORT="$PG_PORT"

# The README's first command needs nothing but the Rust toolchain and a C compiler: its build
# must not reach librdkafka or RocksDB (whose bindings need libclang).
TREE="$(cargo tree --locked -p pitgun -e normal,build --prefix none)"
grep -q '^pitgun-engine ' <<< "$TREE"   # the tree was read
if grep -E '^(librocksdb-sys|rdkafka-sys|bindgen|clang-sys) ' <<< "$TREE"; then
  echo "test.sh: the default pitgun build depends on the crates above; keep them behind the 'live' feature" >&2
  exit 1
fi
# The gateway parses envelopes with the codec alone: no engine (Rhai, sketches) behind it. UCUM
# comes with the dictionary's own rules (pitgun-contracts), which the gateway checks at start.
INGEST_TREE="$(cargo tree --locked -p pitgun-ingest -e normal --prefix none)"
grep -q '^pitgun-codec ' <<< "$INGEST_TREE"   # the tree was read
if grep -E '^(pitgun-engine|rhai|sketches-ddsketch) ' <<< "$INGEST_TREE"; then
  echo "test.sh: pitgun-ingest depends on the crates above; the gateway needs only pitgun-codec to parse" >&2
  exit 1
fi
# The first command itself, built as a new user builds it (default features, its own target
# directory so the live build below is not rebuilt), and what it says of a live subcommand.
FIRST="$CARGO_TARGET_DIR/first-command"
CARGO_TARGET_DIR="$FIRST" cargo run --locked --release -p pitgun -- replay \
  --manifest manifests/pipelines/lap-performance.v1.yaml --input samples/racing-small.ndjson.zst > "$STACK_DIR/first-rows.ndjson"
test -s "$STACK_DIR/first-rows.ndjson"
if "$FIRST/release/pitgun" process --manifest manifests/pipelines/lap-performance.v1.yaml 2> "$STACK_DIR/live.err"; then
  echo "test.sh: a default build ran 'pitgun process'" >&2; exit 1
fi
grep -q -- "--features live" "$STACK_DIR/live.err"

# One profile (Cargo.toml, `ci`) serves the binary below, the lints and the tests.
cargo build --locked --profile ci -p pitgun --features live
"$CARGO_TARGET_DIR/ci/pitgun" replay --manifest manifests/pipelines/lap-performance.v1.yaml \
  --input samples/racing-small.ndjson.zst 2>/dev/null | cmp - "$STACK_DIR/first-rows.ndjson"
echo "test.sh: the first command builds without librdkafka or RocksDB and gives the live build's rows"
# The browser game: its npm packages from the lockfile, its unit tests (simulation, telemetry
# client), and its build (game/dist), which the image carries and the browser test in
# cli/tests/game.rs serves.
npm ci --prefix game --no-audit --no-fund
npm --prefix game test
npm --prefix game run build
# The image: built from the Containerfile with the binary just built, exported and read back,
# then run: --version, a non-root gateway container answering 202, a processor container
# consuming that batch.
bash scripts/image.sh build
bash scripts/image.sh test --brokers "$PITGUN_TEST_BROKERS"
# Lints over the whole tree, tests included, with the profile and features just built (the
# check reuses their build scripts: no second RocksDB compile); any warning fails.
cargo clippy --version > /dev/null 2>&1 || rustup component add clippy
cargo clippy --locked --workspace --all-targets --profile ci --all-features -- -D warnings
cargo test --locked --workspace --profile ci --all-features
"$CARGO_TARGET_DIR/ci/pitgun" manifest test manifests/pipelines/*.yaml
# The fault soak starts a stack of its own (it restarts the broker and PostgreSQL), and the fuzz
# targets need neither: this run's stack is stopped first.
cleanup
trap - EXIT
# Three minutes of the live stack under load with seeded faults (scripts/soak.sh, cli/tests/soak.rs).
bash scripts/soak.sh 180
# Every fuzz target for 60 s on its committed corpus (scripts/fuzz.sh: a fixed seed, printed).
bash scripts/fuzz.sh 60
