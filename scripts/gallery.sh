#!/usr/bin/env bash
# The main job: the gallery. Builds and installs clip_search, exports a full-size ViT-B-32 if missing (random
# weights: no model hub is reachable here; see the README for real weights), starts the private 'demo' cluster,
# and serves the gallery (gallery/: a web page and a JSON API) on http://127.0.0.1:8080 until stopped (Ctrl-C).
# Its first run stores 16 photos from scikit-image's wheel. PostgreSQL is the only store: the database 'gallery'
# of the demo cluster. A set-up step, as the superuser postgres, installs or updates the extension, creates (or, after
# a model change, re-embeds) the tables and the login role clip_gallery; the server connects as clip_gallery, which
# may only read and write the rows of the gallery's tables.
#   CLIP_GALLERY_HTTP_PORT   the HTTP port (default 8080)
#   CLIP_MODEL_DIR           a model directory exported with real weights (default: ViT-B-32, random weights)
# Safe to run twice. Stopping the server leaves the cluster running: scripts/cluster.sh stop demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2
http_port=${CLIP_GALLERY_HTTP_PORT:-8080}

prepare_demo
if [[ -z "$(scripts/cluster.sh psql demo -tA -c "SELECT 1 FROM pg_database WHERE datname = 'gallery'")" ]]; then
  scripts/cluster.sh psql demo -c "CREATE DATABASE gallery"
fi
log "cluster 'demo' on port $PGPORT, database 'gallery' (psql: scripts/cluster.sh psql demo -d gallery)"

log "building the gallery server (cargo build -p clip-gallery)"
cargo build -p clip-gallery --quiet
log "setting up the database 'gallery' (the first run embeds the photos of $DEMO_PHOTOS)"
"$ROOT/target/debug/clip-gallery" --setup --database "host=$PGSOCKET port=$PGPORT user=postgres dbname=gallery" \
  --role clip_gallery --import-dir "$DEMO_PHOTOS" >/dev/null
log "starting the gallery as the role clip_gallery; Ctrl-C stops it"
# The server prints "clip-gallery: listening on http://127.0.0.1:PORT" once it is ready.
exec "$ROOT/target/debug/clip-gallery" --listen "127.0.0.1:$http_port" \
  --database "host=$PGSOCKET port=$PGPORT user=clip_gallery dbname=gallery"
