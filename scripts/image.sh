#!/usr/bin/env bash
# The pitgun OCI image, built and run without a daemon or a registry.
#
#   scripts/image.sh base                      Debian base (debootstrap minbase), made once per
#                                              machine and cached in $PITGUN_CACHE/base
#   scripts/image.sh build [--binary PATH]     the image from ./Containerfile (buildah, chroot
#                                              isolation) with the binary and game/dist (the
#                                              built game), tagged with the commit; exported to
#                                              $PITGUN_CACHE/image/pitgun-TAG.oci.tar and read
#                                              back with skopeo
#   scripts/image.sh test --brokers HOST:PORT  the image test: --version, a topics container
#                                              creating the topics, a non-root gateway container
#                                              answering 202 to a batch and a processor container
#                                              consuming it
#
# The binary is built outside the image (the base has no Rust toolchain) with debug info
# stripped; it must be built for this machine's Debian release, which is also the base's.
# Containers run with runc (crun cannot run here: hybrid cgroups) and explicit ulimits.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${PITGUN_CACHE:-$HOME/.cache/pitgun}"
SUITE="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
BASE="$CACHE/base/$SUITE-minbase.tar"
MIRROR="${PITGUN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BINARY="${CARGO_TARGET_DIR:-$CACHE/target}/ci/pitgun"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
TAG="${PITGUN_IMAGE_TAG:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)}"
IMAGE="localhost/pitgun:$TAG"
PODMAN=(podman --runtime runc)
RUN_LIMITS=(--ulimit nofile=1024:20000 --ulimit nproc=4096:4096)

log() { echo "image: $*" >&2; }
die() { echo "image: error: $*" >&2; exit 1; }

base() {
  [ -s "$BASE" ] && { log "base $BASE (cached)"; return 0; }
  command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/stack.sh install adds it)"
  local root; root="$(mktemp -d /tmp/pitgun-base.XXXXXX)"
  log "making the $SUITE base with debootstrap (once per machine, a few minutes)"
  timeout 1200 debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" > "$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; rm -rf "$root"; die "debootstrap failed"; }
  mkdir -p "$(dirname "$BASE")"
  tar --numeric-owner -C "$root" -cf "$BASE.part" .
  mv "$BASE.part" "$BASE"
  rm -rf "$root" "$root.log"
  log "base $BASE ($(du -h "$BASE" | cut -f1))"
}

build() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --binary) BINARY="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  [ -x "$BINARY" ] || die "no binary at $BINARY (cargo build --profile ci -p pitgun --features live)"
  [ -s game/dist/index.html ] || die "no built game at game/dist (npm --prefix game run build)"
  base
  CTX="$(mktemp -d /tmp/pitgun-image.XXXXXX)"; local ctx="$CTX"
  trap 'rm -rf "$CTX"' EXIT
  ln "$BASE" "$ctx/base.tar" 2>/dev/null || cp "$BASE" "$ctx/base.tar"
  objcopy --strip-debug "$BINARY" "$ctx/pitgun"
  # Readable by the image's user (10001) whatever the umask that built it.
  cp -R game/dist "$ctx/game" && chmod -R a+rX "$ctx/game"
  local version; version="$("$ctx/pitgun" --version | awk '{print $2}')"
  local source; source="$(git remote get-url origin 2>/dev/null || echo "file://$PWD")"
  # One image and one archive per machine: earlier builds go.
  buildah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep '^localhost/pitgun:' | xargs -r buildah rmi -f >/dev/null 2>&1 || true
  rm -f "$CACHE"/image/pitgun-*.oci.tar
  log "building $IMAGE (pitgun $version, revision $REVISION)"
  buildah bud --quiet --isolation chroot --layers=false -f Containerfile \
    --build-arg VERSION="$version" --build-arg REVISION="$REVISION" \
    --label org.opencontainers.image.source="$source" \
    -t "$IMAGE" "$ctx" >/dev/null
  mkdir -p "$CACHE/image"
  local archive="$CACHE/image/pitgun-$TAG.oci.tar"
  rm -f "$archive"
  buildah push --quiet "$IMAGE" "oci-archive:$archive:pitgun:$TAG"
  # Read back from the exported archive, as a registry-connected CI would push it.
  local labels; labels="$(skopeo inspect "oci-archive:$archive" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["Labels"], sort_keys=True))')"
  grep -q "\"org.opencontainers.image.revision\": \"$REVISION\"" <<< "$labels" || die "the exported image lacks its revision label: $labels"
  log "$archive ($(du -h "$archive" | cut -f1)); labels $labels"
}

# The image test: the image answers --version, a topics container creates the topics (the
# k8s/topics-job command), the gateway runs as uid 10001 with a read-only root and takes a batch
# (202) that a processor container then consumes.
image_test() {
  local brokers=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --brokers) brokers="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  [ -n "$brokers" ] || die "--brokers HOST:PORT is required (the test broker)"
  local version; version="$("${PODMAN[@]}" run --rm "${RUN_LIMITS[@]}" "$IMAGE" --version)"
  [[ "$version" == "pitgun "* ]] || die "--version answered '$version'"
  log "--version: $version"

  TEST_DIR="$(mktemp -d /tmp/pitgun-image-test.XXXXXX)"; local dir="$TEST_DIR"
  local ns; ns="t-image-$$-$(date +%s)"
  GATEWAY="pitgun-image-gateway-$$"; local gw="$GATEWAY"
  cleanup_test() { "${PODMAN[@]}" rm -f -t 5 "$GATEWAY" >/dev/null 2>&1 || true; rm -rf "$TEST_DIR"; }
  trap cleanup_test EXIT
  mkdir -p "$dir/keys" "$dir/state"
  local token; token="$("$BINARY" gateway keygen --source pitgun-web --keys "$dir/keys/keys.yaml")"
  chmod 755 "$dir" "$dir/keys"; chmod 644 "$dir/keys/keys.yaml"; chown 10001:10001 "$dir/state"
  local port; port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  local mounts=(-v "$PWD/manifests:/etc/pitgun/manifests:ro" -v "$dir/keys:/etc/pitgun/keys:ro")
  # The topics, as k8s/topics-job creates them.
  "${PODMAN[@]}" run --rm --network host --read-only "${RUN_LIMITS[@]}" "${mounts[@]}" "$IMAGE" \
    topics --brokers "$brokers" --namespace "$ns" --manifest /etc/pitgun/manifests/pipelines --partitions 2 > "$dir/topics" \
    || die "the topics container failed"
  grep -q "^$ns.pitgun.state.lap-performance.v1	2 partitions	created$" "$dir/topics" || { cat "$dir/topics" >&2; die "the topics container did not create the changelog topic"; }
  log "the topics container created $(wc -l < "$dir/topics") topics"
  "${PODMAN[@]}" run -d --name "$gw" --network host --read-only "${RUN_LIMITS[@]}" "${mounts[@]}" "$IMAGE" \
    gateway --listen "127.0.0.1:$port" --brokers "$brokers" --namespace "$ns" --keys /etc/pitgun/keys/keys.yaml \
    --dictionary /etc/pitgun/manifests/dictionary/racing.yaml --manifests /etc/pitgun/manifests >/dev/null
  local deadline=$((SECONDS + 30))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; do
    [ $SECONDS -lt $deadline ] || { "${PODMAN[@]}" logs "$gw" >&2; die "the gateway container was not ready within 30 s"; }
    sleep 0.2
  done
  local pid; pid="$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' "$gw")"
  local uid; uid="$(awk '/^Uid:/{print $2}' "/proc/$pid/status")"
  [ "$uid" = 10001 ] || die "the gateway runs as uid $uid, not 10001"
  log "the gateway container runs as uid $uid with a read-only root"

  local n=300
  # The key sends for pitgun-web only.
  zstdcat samples/racing-small.ndjson.zst | awk -v n="$n" '/"id":"pitgun-web"/ && c < n { print; c++ }' > "$dir/batch.ndjson"
  [ "$(wc -l < "$dir/batch.ndjson")" = "$n" ] || die "cannot read $n envelopes from samples/racing-small.ndjson.zst"
  local code; code="$(curl -s -o "$dir/answer" -w '%{http_code}' -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/x-ndjson' --data-binary "@$dir/batch.ndjson" "http://127.0.0.1:$port/v1/envelopes")"
  [ "$code" = 202 ] || die "the gateway container answered $code to a batch of $n: $(cat "$dir/answer")"
  log "the gateway container answered 202 to a batch of $n envelopes"

  "${PODMAN[@]}" run --rm --network host --read-only "${RUN_LIMITS[@]}" "${mounts[@]}" -v "$dir/state:/var/lib/pitgun/state" "$IMAGE" \
    process --manifest /etc/pitgun/manifests/pipelines/lap-performance.v1.yaml \
    --dictionary /etc/pitgun/manifests/dictionary/racing.yaml --state-dir /var/lib/pitgun/state \
    --brokers "$brokers" --namespace "$ns" --until-end > "$dir/summary" 2> "$dir/process.log" \
    || { tail -n 20 "$dir/process.log" >&2; die "the processor container failed"; }
  grep -q "\"records\":$n," "$dir/summary" || { cat "$dir/summary" >&2; die "the processor container did not consume the $n envelopes"; }
  log "the processor container consumed the $n envelopes: $(cat "$dir/summary")"
}

case "${1:-}" in
  base) shift; base "$@" ;;
  build) shift; build "$@" ;;
  test) shift; image_test "$@" ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
