#!/usr/bin/env bash
# The SQL demo: build and install clip_search, pick the model as scripts/gallery.sh does (the recommended model from
# the Hugging Face hub, else, loudly, ViT-B-32 with random weights; CLIP_MODEL_DIR names another), start the private
# 'demo' cluster, load real photos from scikit-image's wheel into a table whose embedding is a generated column, and
# search it with SQL. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2

prepare_demo demo recommended
log "cluster 'demo' on port $PGPORT (psql: scripts/cluster.sh psql demo)"
scripts/cluster.sh psql demo -v dir="$DEMO_PHOTOS" -v files="$(cd "$DEMO_PHOTOS" && ls | paste -sd,)" -f scripts/demo.sql
