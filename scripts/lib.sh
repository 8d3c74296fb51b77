# Shared settings and helpers for the scripts in this folder. Sourced, never run.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPS="$ROOT/.deps"
VENV="$ROOT/.venv"
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_BIN=$(dirname "$PG_CONFIG")
PGRX_VERSION=0.18.1
PGVECTOR_VERSION=0.8.0
ORT_VERSION=1.31.1
ORT_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
ORT_LIB="$DEPS/onnxruntime/libonnxruntime.so.$ORT_VERSION"

log() { printf '\033[1m[clip_search]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
pg_sharedir() { "$PG_CONFIG" --sharedir; }
pg_pkglibdir() { "$PG_CONFIG" --pkglibdir; }
# Puts the ONNX Runtime library next to the extension, where clip.onnxruntime_library's default points.
install_onnxruntime() {
  $([[ $(id -u) -ne 0 ]] && echo sudo) install -D -m 0644 "$ORT_LIB" "$(pg_pkglibdir)/clip_search/$(basename "$ORT_LIB")"
}
sha256_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]; }

# Connection settings of the private cluster NAME (see cluster.sh), exported for psql and libpq clients.
cluster_env() {
  local name=$1
  case "$name" in
    demo) PGPORT=${CLIP_DEMO_PORT:-55432} ;;
    test) PGPORT=${CLIP_TEST_PORT:-55433} ;;
    gallery) PGPORT=${CLIP_GALLERY_PORT:-55434} ;;
    *) die "unknown cluster $name" ;;
  esac
  export PGDATA="$DEPS/cluster-$name" PGPORT PGSOCKET="/tmp/clip_search-$PGPORT"
  export PGHOST="$PGSOCKET" PGUSER=postgres PGDATABASE=postgres
}

# The demo's set-up, shared by demo.sh, gallery.sh and loadtest.sh: installs everything (with the Python
# exporter), builds and installs a release build, exports ViT-B-32 with random weights unless CLIP_MODEL_DIR
# names a model, copies 16 photos from scikit-image's wheel, starts the 'demo' cluster with that model.
# Sets DEMO_MODEL_DIR and DEMO_PHOTOS, and the demo cluster's connection variables.
prepare_demo() {
  scripts/setup.sh --python
  scripts/install.sh
  DEMO_MODEL_DIR=${CLIP_MODEL_DIR:-$DEPS/models/ViT-B-32-random}
  if [[ ! -f "$DEMO_MODEL_DIR/manifest.json" ]]; then
    log "exporting ViT-B-32 with random weights (seed 0) to $DEMO_MODEL_DIR"
    "$VENV/bin/python" tools/export_model.py --model ViT-B-32 --random-seed 0 --out "$DEMO_MODEL_DIR" 2>&1 \
      | grep -v -i warn >&2
  fi
  DEMO_PHOTOS="$DEPS/photos"
  if [[ ! -d "$DEMO_PHOTOS" ]]; then
    local skimage_data f
    skimage_data=$("$VENV/bin/python" -c "import os, skimage; print(os.path.dirname(skimage.__file__) + '/data')")
    mkdir -p "$DEMO_PHOTOS"
    for f in astronaut.png chelsea.png coffee.png rocket.jpg horse.png motorcycle_left.png hubble_deep_field.jpg \
             camera.png coins.png moon.png page.png retina.jpg brick.png grass.png gravel.png clock_motion.png; do
      cp "$skimage_data/$f" "$DEMO_PHOTOS/"
    done
  fi
  scripts/cluster.sh start demo
  cluster_env demo
  scripts/cluster.sh psql demo -c "LOAD 'clip_search'" -c "ALTER SYSTEM SET clip.model_dir = '$DEMO_MODEL_DIR'" \
    -c "SELECT pg_reload_conf()" >/dev/null
}
