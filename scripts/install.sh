#!/usr/bin/env bash
# Builds clip_search and installs it, with its ONNX Runtime library, into the PostgreSQL that $PG_CONFIG names
# (by default that of PG_MAJOR: see scripts/lib.sh). scripts/package.sh makes a Debian package instead.
#   scripts/install.sh            release build
#   scripts/install.sh --debug    debug build (faster to compile)
# Each file is renamed into place (install_atomically), so running backends and new ones are never handed a
# half-written library.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
profile=release
[[ "${1:-}" == "--debug" ]] && profile=debug

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
log "building and installing the extension ($profile, PostgreSQL $PG_MAJOR)"
build_extension_tree "$profile" "$tree"
install_extension_tree "$tree"
