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
