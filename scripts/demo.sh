#!/usr/bin/env bash
# The main job: build and install clip_search, export a full-size ViT-B-32 (random weights: no model hub is
# reachable here; see the README for real weights), start the private 'demo' cluster, load real photos from
# scikit-image's wheel into a table whose embedding is a generated column, and search it with SQL.
# Safe to run twice. Set CLIP_MODEL_DIR to use a model directory you exported with real weights.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2

scripts/setup.sh --python
scripts/install.sh

model_dir=${CLIP_MODEL_DIR:-$DEPS/models/ViT-B-32-random}
if [[ ! -f "$model_dir/manifest.json" ]]; then
  log "exporting ViT-B-32 with random weights (seed 0) to $model_dir"
  "$VENV/bin/python" tools/export_model.py --model ViT-B-32 --random-seed 0 --out "$model_dir" 2>&1 \
    | grep -v -i warn >&2
fi

photos="$DEPS/photos"
if [[ ! -d "$photos" ]]; then
  skimage_data=$("$VENV/bin/python" -c "import os, skimage; print(os.path.dirname(skimage.__file__) + '/data')")
  mkdir -p "$photos"
  for f in astronaut.png chelsea.png coffee.png rocket.jpg horse.png motorcycle_left.png hubble_deep_field.jpg \
           camera.png coins.png moon.png page.png retina.jpg brick.png grass.png gravel.png clock_motion.png; do
    cp "$skimage_data/$f" "$photos/"
  done
fi

scripts/cluster.sh start demo
cluster_env demo
scripts/cluster.sh psql demo -c "LOAD 'clip_search'" -c "ALTER SYSTEM SET clip.model_dir = '$model_dir'" -c "SELECT pg_reload_conf()" >/dev/null
log "cluster 'demo' on port $PGPORT (psql: scripts/cluster.sh psql demo)"
scripts/cluster.sh psql demo -v dir="$photos" -v files="$(cd "$photos" && ls | paste -sd,)" -f scripts/demo.sql
