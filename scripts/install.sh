#!/usr/bin/env bash
# Builds clip_search and installs it, with its ONNX Runtime library, into the PostgreSQL that $PG_CONFIG names.
#   scripts/install.sh            release build
#   scripts/install.sh --debug    debug build (faster to compile; what the test suite uses)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
profile=(--release)
[[ "${1:-}" == "--debug" ]] && profile=()
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

log "building and installing the extension (${profile[*]:-debug})"
CARGO_BUILD_JOBS=2 cargo pgrx install "${profile[@]}" --pg-config "$PG_CONFIG" ${SUDO:+--sudo} >/dev/null 2>"$DEPS/install.log" \
  || { cat "$DEPS/install.log" >&2; die "cargo pgrx install failed"; }
install_onnxruntime
