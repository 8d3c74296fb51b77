#!/usr/bin/env bash
# Installs everything clip_search needs on a fresh Debian 12 machine. Safe to run twice: each step checks
# whether its result is already there.
#
#   scripts/setup.sh            system packages, pgvector, cargo-pgrx, the ONNX Runtime library
#   scripts/setup.sh --python   also the Python environment (.venv) with open_clip for the model exporter
#
# Versions are pinned; see ../shared/notes/toolchain.md for why these ones.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

want_python=0
[[ "${1:-}" == "--python" ]] && want_python=1

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

# --- Debian packages -------------------------------------------------------------------------------------------
apt_packages=(postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo pkg-config build-essential unzip curl ca-certificates)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- pgvector 0.8.0, built from Debian trixie's source package (not packaged for Debian 12) -------------------
if [[ ! -f "$(pg_sharedir)/extension/vector.control" ]]; then
  log "building pgvector $PGVECTOR_VERSION"
  src_list=/etc/apt/sources.list.d/clip-search-trixie-src.sources
  if [[ ! -f $src_list ]]; then
    $SUDO tee "$src_list" >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    $SUDO apt-get update -qq
  fi
  mkdir -p "$DEPS/pgvector"
  (cd "$DEPS/pgvector" && { ls pgvector_${PGVECTOR_VERSION}.orig.tar.gz >/dev/null 2>&1 || apt-get source --download-only "pgvector=${PGVECTOR_VERSION}-*" >/dev/null 2>&1 || apt-get source --download-only pgvector >/dev/null; } \
    && rm -rf "pgvector-$PGVECTOR_VERSION" && tar xzf "pgvector_${PGVECTOR_VERSION}.orig.tar.gz" \
    && cd "pgvector-$PGVECTOR_VERSION" && make -s -j2 PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null \
    && $SUDO make -s install PG_CONFIG="$PG_CONFIG" >/dev/null)
fi

# --- cargo-pgrx, pinned to the pgrx version in Cargo.toml ------------------------------------------------------
if [[ "$(cargo pgrx --version 2>/dev/null)" != *"$PGRX_VERSION"* ]]; then
  log "installing cargo-pgrx $PGRX_VERSION (a few minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked -j2 --quiet
fi
if ! grep -qs "^pg15" "$HOME/.pgrx/config.toml"; then
  log "cargo pgrx init --pg15"
  cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

# --- ONNX Runtime shared library, from the official PyPI wheel --------------------------------------------------
if ! sha256_ok "$ORT_LIB" "$ORT_SHA256"; then
  log "fetching ONNX Runtime $ORT_VERSION"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 -d "$tmp" "onnxruntime==$ORT_VERSION"
  mkdir -p "$(dirname "$ORT_LIB")"
  unzip -p "$tmp"/onnxruntime-*.whl "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" >"$ORT_LIB"
  rm -rf "$tmp"
  sha256_ok "$ORT_LIB" "$ORT_SHA256" || die "ONNX Runtime library checksum mismatch"
fi

# --- Python environment for the exporter, the reference (open_clip) and the demo photos -----------------------
if ((want_python)); then
  if ! "$VENV/bin/python" -c "import open_clip, onnx, onnxscript, onnxruntime, skimage" 2>/dev/null; then
    log "creating $VENV with torch and open_clip (downloads about 3 GB)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r tools/requirements.txt
  fi
fi
log "setup done"
