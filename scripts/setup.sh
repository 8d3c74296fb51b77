#!/usr/bin/env bash
# Installs everything clip_search needs on a fresh Debian 12 machine. Safe to run twice: each step checks
# whether its result is already there.
#
#   scripts/setup.sh            system packages, pgvector, cargo-pgrx, the ONNX Runtime library
#   scripts/setup.sh --python   also the Python environment (.venv) with open_clip for the model exporter
#   scripts/setup.sh --gpu      also ONNX Runtime's GPU build and the CUDA libraries it loads (.deps/onnxruntime-gpu)
#
# Versions are pinned in versions.env and Cargo.toml (see scripts/lib.sh); PostgreSQL is $PG_MAJOR's.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

want_python=0 want_gpu=0
for option in "$@"; do
  case $option in
    --python) want_python=1 ;;
    --gpu) want_gpu=1 ;;
    *) die "usage: scripts/setup.sh [--python] [--gpu]" ;;
  esac
done

# --- Debian packages -------------------------------------------------------------------------------------------
apt_packages=(libclang-dev clang sudo pkg-config build-essential libjpeg62-turbo-dev unzip curl ca-certificates qemu-user)
# The server: Debian's package where apt has one for PG_MAJOR (Debian 12 has 15; the PostgreSQL apt repository has
# 13 to 18), else a build from a Debian or Ubuntu source package into .deps (build_postgres_from_source in
# scripts/lib.sh).
server_from_apt=0
if [[ -x /usr/lib/postgresql/$PG_MAJOR/bin/pg_config ]] || apt-cache show "postgresql-$PG_MAJOR" >/dev/null 2>&1; then
  server_from_apt=1
  apt_packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR "${apt_packages[@]}")
fi
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ((server_from_apt)); then
  [[ -x $PG_CONFIG ]] || PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config   # installed just now
else
  build_postgres_from_source "$PG_MAJOR"
fi

# --- pgvector, built from Debian trixie's source package (not packaged for Debian 12) ----------------------------
if [[ ! -f "$(pg_sharedir)/extension/vector.control" ]]; then
  pgvector_tree=$(pgvector_source_tree)
  $SUDO make -s -C "$pgvector_tree" install PG_CONFIG="$PG_CONFIG" >/dev/null
fi

# --- cargo-pgrx, pinned to the pgrx version in Cargo.toml ------------------------------------------------------
if [[ "$(cargo pgrx --version 2>/dev/null)" != *"$PGRX_VERSION"* ]]; then
  log "installing cargo-pgrx $PGRX_VERSION (a few minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked -j2 --quiet
fi

# --- ONNX Runtime shared library, with its license and notices, from the official PyPI wheel ---------------------
if ! sha256_ok "$ORT_LIB" "$ORT_SHA256" || ! ls "${ORT_NOTICES[@]}" >/dev/null 2>&1; then
  log "fetching ONNX Runtime $ORT_VERSION"
  tmp=$(mktemp -d)
  wheel=$(download_wheel "onnxruntime==$ORT_VERSION" "$tmp") || die "cannot download ONNX Runtime's wheel"
  mkdir -p "$ORT_DIR"
  unzip -p "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" >"$ORT_LIB"
  for notice in "${ORT_NOTICES[@]}"; do unzip -p "$wheel" "onnxruntime/$(basename "$notice")" >"$notice"; done
  rm -rf "$tmp"
  sha256_ok "$ORT_LIB" "$ORT_SHA256" || die "ONNX Runtime library checksum mismatch"
fi

# --- ONNX Runtime's GPU build and CUDA's libraries, from their PyPI wheels (--gpu) ---------------------------------
# One folder: the CUDA provider is loaded from beside libonnxruntime.so, and the extension loads the CUDA libraries
# from there before it (runtime.rs, CUDA_LIBRARIES). Each wheel's license goes with it. The GPU's driver (libcuda)
# is the system's.
gpu_wheels="onnxruntime-gpu==$ORT_VERSION $CUDA_WHEELS"
if ((want_gpu)) && [[ "$(cat "$ORT_GPU_DIR/complete" 2>/dev/null)" != "$gpu_wheels" ]]; then
  log "fetching ONNX Runtime $ORT_VERSION's GPU build and the CUDA libraries (about 2 GB of wheels)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # shellcheck disable=SC2086 # a list of requirements
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_12_x86_64 \
    --platform manylinux_2_5_x86_64 -d "$tmp" $gpu_wheels || die "cannot download the GPU wheels"
  got=$(sha256sum "$tmp"/*.whl | awk '{ print $1 }' | sort | xargs)
  [[ $got == "$(xargs -n1 <<<"$GPU_WHEELS_SHA256" | sort | xargs)" ]] || die "the GPU wheels' checksums differ from versions.env's"
  rm -rf "$ORT_GPU_DIR" && mkdir -p "$ORT_GPU_DIR"
  for wheel in "$tmp"/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1)
    if [[ $name == onnxruntime_gpu ]]; then
      unzip -q -o -j "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" \
        onnxruntime/capi/libonnxruntime_providers_{cuda,shared}.so onnxruntime/{LICENSE,ThirdPartyNotices.txt} \
        -d "$ORT_GPU_DIR" || die "$wheel lacks ONNX Runtime's library, its CUDA provider or its license"
    else
      unzip -q -o -j "$wheel" 'nvidia/*.so*' -d "$ORT_GPU_DIR" || die "$wheel holds no library"
      unzip -p "$wheel" '*.dist-info/*License.txt' >"$ORT_GPU_DIR/License.$name.txt" || die "$wheel holds no license"
    fi
  done
  rm -rf "$tmp"
  trap - EXIT
  libraries=$(sed -n '/^pub const CUDA_LIBRARIES/,/^];/s/^ *"\(.*\)",$/\1/p' crates/clip_core/src/runtime.rs)
  [[ -n $libraries ]] || die "no CUDA_LIBRARIES list found in crates/clip_core/src/runtime.rs"
  for library in $libraries; do
    [[ -f $ORT_GPU_DIR/$library ]] || die "the GPU wheels hold no $library"
  done
  echo "$gpu_wheels" >"$ORT_GPU_DIR/complete"
fi

# --- Python environment for the exporter and the reference (open_clip) ------------------------------------------
if ((want_python)); then
  # Python's onnxruntime is the version of the library the extension loads, so that the two give the same outputs.
  if ! "$VENV/bin/python" -c "import open_clip, onnx, onnxscript, onnxruntime, skimage, transformers, tokenizers
assert onnxruntime.__version__ == '$ORT_VERSION' and skimage.__version__ == '$SKIMAGE_VERSION'" 2>/dev/null; then
    log "creating $VENV with torch and open_clip (downloads about 3 GB)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r tools/requirements.txt "onnxruntime==$ORT_VERSION" "scikit-image==$SKIMAGE_VERSION"
  fi
fi
log "setup done"
