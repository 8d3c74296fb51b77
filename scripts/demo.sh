#!/usr/bin/env bash
# The SQL demo: build and install clip_search, export a full-size ViT-B-32 (random weights: no model hub is
# reachable here; see the README for real weights), start the private 'demo' cluster, load real photos from
# scikit-image's wheel into a table whose embedding is a generated column, and search it with SQL.
# Safe to run twice. Set CLIP_MODEL_DIR to use a model directory you exported with real weights.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2

prepare_demo
log "cluster 'demo' on port $PGPORT (psql: scripts/cluster.sh psql demo)"
scripts/cluster.sh psql demo -v dir="$DEMO_PHOTOS" -v files="$(cd "$DEMO_PHOTOS" && ls | paste -sd,)" -f scripts/demo.sql
