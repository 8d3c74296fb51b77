#!/usr/bin/env bash
# The main job: the gallery. Builds and installs clip_search, picks the model, starts the private 'demo' cluster,
# and serves the gallery (gallery/: a web page and a JSON API) on http://127.0.0.1:8080 until stopped (Ctrl-C).
# The model: the recommended one with pretrained weights (RECOMMENDED_MODEL in scripts/lib.sh), installed from the
# Hugging Face hub by clip-fetch on the first run; when it cannot be fetched, ViT-B-32 with random weights, exported
# with the Python environment (scripts/setup.sh --python), and the output and the page say so.
# Its first run stores 16 photos from scikit-image's wheel. PostgreSQL is the only store: the database 'gallery'
# of the cluster. A set-up step, as the superuser postgres, installs or updates the extension, creates (or, after
# a model change, re-embeds) the tables and the login role clip_gallery; the server connects as clip_gallery, which
# may only read and write the rows of the gallery's tables.
#   CLIP_GALLERY_HTTP_PORT   the HTTP port (default 8080; 0 picks a free one, printed when listening)
#   CLIP_MODEL_DIR           a model directory to serve instead (clip-fetch's, or one exported by tools/)
#   CLIP_MODELS_DIR          where clip-fetch installs the recommended model (default .deps/models)
#   HF_ENDPOINT              the hub or a mirror clip-fetch fetches from (default https://huggingface.co)
#   CLIP_RANDOM_MODEL_DIR    when the fetch fails, this model with random weights instead of exporting ViT-B-32
#   CLIP_GALLERY_CLUSTER     the private cluster (default demo; see cluster_env in scripts/lib.sh)
#   CLIP_PRIVATE_POSTGRES    install into and run from the private PostgreSQL installation .deps/pgroot/NAME
#                            (use_private_postgres in scripts/lib.sh) instead of the system's: for the tests
# Safe to run twice. Stopping the server leaves the cluster running: scripts/cluster.sh stop demo (or its name).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2
http_port=${CLIP_GALLERY_HTTP_PORT:-8080}
cluster=${CLIP_GALLERY_CLUSTER:-demo}

if [[ -n ${CLIP_PRIVATE_POSTGRES:-} ]]; then
  scripts/setup.sh
  use_private_postgres "$CLIP_PRIVATE_POSTGRES"
fi
prepare_demo "$cluster" recommended
if [[ -z "$(scripts/cluster.sh psql "$cluster" -tA -c "SELECT 1 FROM pg_database WHERE datname = 'gallery'")" ]]; then
  # No role may create in the schema public: PostgreSQL's default from 15 on, made explicit for older servers.
  scripts/cluster.sh psql "$cluster" -c "CREATE DATABASE gallery" \
    -c "\\connect gallery" -c "REVOKE CREATE ON SCHEMA public FROM PUBLIC" >/dev/null
fi
log "cluster '$cluster' on port $PGPORT, database 'gallery' (psql: scripts/cluster.sh psql $cluster -d gallery)"

log "building the gallery server (cargo build -p clip-gallery)"
cargo build -p clip-gallery --quiet
log "setting up the database 'gallery' (the first run embeds the photos of $DEMO_PHOTOS)"
"$ROOT/target/debug/clip-gallery" --setup --database "host=$PGSOCKET port=$PGPORT user=postgres dbname=gallery" \
  --role clip_gallery --import-dir "$DEMO_PHOTOS" >/dev/null
log "starting the gallery as the role clip_gallery; Ctrl-C stops it"
# The server prints "clip-gallery: listening on http://127.0.0.1:PORT" once it is ready, and on stderr which
# model it serves, with a notice when its weights are random.
exec "$ROOT/target/debug/clip-gallery" --listen "127.0.0.1:$http_port" \
  --database "host=$PGSOCKET port=$PGPORT user=clip_gallery dbname=gallery"
