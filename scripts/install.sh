#!/usr/bin/env bash
# Builds clip_search and installs it, with its ONNX Runtime library, into the PostgreSQL that $PG_CONFIG names
# (by default that of PG_MAJOR: see scripts/lib.sh). scripts/package.sh makes a Debian package instead.
#   scripts/install.sh            release build
#   scripts/install.sh --debug    debug build (faster to compile)
#   scripts/install.sh --gpu      also ONNX Runtime's GPU build and CUDA's libraries (scripts/setup.sh --gpu fetches
#                                 them), for clip.execution_provider = cuda
# Each file is renamed into place (install_atomically), so running backends and new ones are never handed a
# half-written library.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
profile=release gpu=0
for option in "$@"; do
  case $option in
    --debug) profile=debug ;;
    --gpu) gpu=1 ;;
    *) die "usage: scripts/install.sh [--debug] [--gpu]" ;;
  esac
done

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
log "building and installing the extension ($profile, PostgreSQL $PG_MAJOR)"
build_extension_tree "$profile" "$tree"
install_extension_tree "$tree"
if ((gpu)); then
  install_onnxruntime_gpu
  log "ONNX Runtime's GPU build is installed: set clip.onnxruntime_library = '$(ort_gpu_installed_library)' and\
 clip.execution_provider = cuda in postgresql.conf, then restart the server"
fi
