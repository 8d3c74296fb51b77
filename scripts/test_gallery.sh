#!/usr/bin/env bash
# The gallery's tests (gallery/), installing what is missing first. Safe to run twice.
#   1. cargo test -p clip-gallery: the set-up, the server's privileges, every endpoint, bad requests included,
#      against the private 'gallery' cluster (port 55434, or $CLIP_GALLERY_PORT) with the tiny fixture model, which
#      runs from the private PostgreSQL installation 'suites' (use_private_postgres in scripts/lib.sh)
#   2. the browser test: Debian's Chromium, headless, driven by playwright-core (gallery/browser/test.mjs), on the
#      page of a server over a fresh database (set up as postgres, served as the role clip_gallery); screenshots in
#      target/gallery/ (screenshot.png: text search results; home-desktop.png, home-phone.png: the home grid at
#      1280 and 390 pixels wide)
# Stops the cluster at the end; exits non-zero when a test failed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

# The private installation with the extension (normally already there: scripts/test.sh installs the package into
# it before it calls this script).
if [[ -z $PG_ROOT ]]; then
  scripts/setup.sh
  use_private_postgres suites
fi
[[ -f "$(pg_sharedir)/extension/clip_search.control" ]] || scripts/install.sh --debug
if ! command -v chromium >/dev/null; then
  log "installing chromium"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
command -v node >/dev/null && command -v npm >/dev/null || die "the browser test needs node (20 or later) and npm"
if [[ ! -f gallery/browser/node_modules/playwright-core/package.json ]]; then
  log "installing playwright-core for the browser test"
  (cd gallery/browser && npm ci --no-audit --no-fund --silent)
fi
# The server reads the fixture model from this checkout as the 'postgres' user.
if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -r "$ROOT/tests/fixtures/tiny-model/manifest.json"; then
  die "the 'postgres' user cannot read $ROOT/tests/fixtures: clone into a folder that others can read"
fi

cluster_env gallery
server_pid=""
cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  scripts/cluster.sh stop gallery
}
trap cleanup EXIT
# Restarted: a cluster left running may run from another installation.
scripts/cluster.sh stop gallery
scripts/cluster.sh start gallery
scripts/cluster.sh psql gallery -c "LOAD 'clip_search'" \
  -c "ALTER SYSTEM SET clip.model_dir = '$ROOT/tests/fixtures/tiny-model'" -c "SELECT pg_reload_conf()" >/dev/null

passed=0 failed=0
result() { if [[ $2 -eq 0 ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); log "FAILED: $1"; fi; }

log "gallery: cargo test -p clip-gallery"
status=0
cargo test -p clip-gallery || status=$?
result "cargo test -p clip-gallery" $status

browser_test() {
  local out="$ROOT/target/gallery" bin="$ROOT/target/debug/clip-gallery"
  rm -rf "$out" && mkdir -p "$out"
  [[ -x "$bin" ]] || { log "no $bin (did the build fail?)"; return 1; }
  scripts/cluster.sh psql gallery -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS gallery_browser WITH (FORCE)" -c "CREATE DATABASE gallery_browser"
  "$bin" --setup --database "host=$PGSOCKET port=$PGPORT user=postgres dbname=gallery_browser" --role clip_gallery \
    >"$out/setup.out" 2>&1 || { cat "$out/setup.out" >&2; log "the gallery set-up failed"; return 1; }
  "$bin" --listen 127.0.0.1:0 --database "host=$PGSOCKET port=$PGPORT user=clip_gallery dbname=gallery_browser" \
    --max-body-mb 1 >"$out/server.out" 2>"$out/server.log" &
  server_pid=$!
  local url="" i
  for i in $(seq 1 600); do
    url=$(sed -n 's/^clip-gallery: listening on //p' "$out/server.out")
    [[ -n "$url" ]] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n "$url" ]] || { cat "$out/server.log" >&2; log "the gallery server did not start"; return 1; }
  log "gallery: browser test (headless Chromium) against $url"
  local status=0
  node gallery/browser/test.mjs "$url" "$ROOT/tests/fixtures/images" "$out" || status=$?
  kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
  server_pid=""
  [[ $status -eq 0 ]] && log "screenshots: $out/screenshot.png, $out/home-desktop.png, $out/home-phone.png"
  return $status
}
status=0
browser_test || status=$?
result "browser test" $status

echo "gallery: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
