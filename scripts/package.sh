#!/usr/bin/env bash
# Builds Debian packages of clip_search for PostgreSQL $PG_MAJOR (see scripts/lib.sh) into target/package/:
#   postgresql-NN-clip-search_VERSION-1_ARCH.deb
#       the extension, a release build from `cargo pgrx package`: clip_search.so, the control file, the install
#       script and every upgrade script, and the ONNX Runtime library it loads, at
#       $libdir/clip_search/libonnxruntime.so.ORT_VERSION where clip.onnxruntime_library's default points.
#       Depends on postgresql-NN, postgresql-NN-pgvector and the shared libraries its two libraries need (the C and
#       C++ runtimes, libjpeg-turbo).
#   postgresql-NN-pgvector_PGVECTOR_VERSION-0clipsearch1_ARCH.deb
#       pgvector, which the extension requires (`requires = 'vector'`) and Debian 12 does not package, built from
#       Debian's source package as scripts/setup.sh builds it. Its name is the one the PostgreSQL apt repository
#       (apt.postgresql.org) uses, so where that repository is configured its package satisfies the dependency
#       too, and its versions (0.8.0-1.pgdg...) sort above this one's and replace it on upgrade.
# Usage:
#   scripts/package.sh             build both packages and print their paths
#   scripts/package.sh --install   then install them with apt-get, replacing any installed build
# The Maintainer field is taken from DEBFULLNAME and DEBEMAIL, as Debian's own tools take it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
want_install=0
[[ "${1:-}" == "--install" ]] && want_install=1

# The packages install into the system's installation, at its paths, even when PG_CONFIG names a private copy.
PG_CONFIG=$SYSTEM_PG_CONFIG
[[ "$("$PG_CONFIG" --version)" == "PostgreSQL $PG_MAJOR."* ]] || die "$PG_CONFIG is not PostgreSQL $PG_MAJOR"
for file in "$ORT_LIB" "${ORT_NOTICES[@]}"; do [[ -f $file ]] || die "no $file: run scripts/setup.sh"; done
arch=$(dpkg --print-architecture)
out="$ROOT/target/package"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Writes DEBIAN/md5sums (what `dpkg --verify` checks) and DEBIAN/control for the package tree ROOT, then the .deb;
# the remaining arguments are control fields. Depends gets the shared-library dependencies of every ELF file in
# the tree, as dpkg-shlibdeps finds them (it needs a debian/control of its own to run).
build_deb() {
  local root=$1 package=$2 version=$3 depends=$4 description=$5
  local elf=() shlibs
  mapfile -t elf < <(find "$root" -type f -name '*.so*')
  chmod 0644 "${elf[@]}"  # as Debian installs shared libraries: loaded, never run
  mkdir -p "$work/shlibdeps/debian" "$root/DEBIAN"
  printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$package" "$package" >"$work/shlibdeps/debian/control"
  shlibs=$(cd "$work/shlibdeps" && dpkg-shlibdeps -O --warnings=0 "${elf[@]/#/-e}" | sed -n 's/^shlibs:Depends=//p')
  (cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
  cat >"$root/DEBIAN/control" <<EOF
Package: $package
Version: $version
Architecture: $arch
Maintainer: ${DEBFULLNAME:-clip_search developers} <${DEBEMAIL:-clip-search@localhost}>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends${shlibs:+, $shlibs}
Section: database
Priority: optional
Description: $description
EOF
  local deb="$out/${package}_${version}_$arch.deb"
  dpkg-deb --root-owner-group -Zzstd --build "$root" "$deb" >/dev/null
  echo "$deb"
}

# --- clip_search -------------------------------------------------------------------------------------------------
version=$(cargo_package_field version)
package="postgresql-$PG_MAJOR-clip-search"
log "building $package $version (release)"
root="$work/$package"
mkdir -p "$root"
build_extension_tree release "$root"
pkglibdir=$(pg_pkglibdir)
install -D -m 0644 "$ORT_LIB" "$root${pkglibdir#"$PG_SOURCE_ROOT"}/clip_search/$(basename "$ORT_LIB")"
install -D -m 0644 -t "$root/usr/share/doc/$package/onnxruntime" "${ORT_NOTICES[@]}"
cat >"$root/usr/share/doc/$package/copyright" <<EOF
clip_search $version: $(cargo_package_field license) license.
It ships the ONNX Runtime $ORT_VERSION library from its official PyPI wheel, under the license and with the
third-party notices in the onnxruntime folder next to this file.
EOF
rm -f "$out/${package}"_*.deb
clip_deb=$(build_deb "$root" "$package" "$version-1" \
  "postgresql-$PG_MAJOR, postgresql-$PG_MAJOR-pgvector (>= $PGVECTOR_VERSION)" \
  "$(cargo_package_field description) (PostgreSQL $PG_MAJOR)
 SQL functions that embed text and images with a CLIP model (ONNX Runtime $ORT_VERSION, included) into
 pgvector vectors. The model is not included: see clip.model_dir.")

# --- pgvector ----------------------------------------------------------------------------------------------------
package="postgresql-$PG_MAJOR-pgvector"
log "building $package $PGVECTOR_VERSION"
root="$work/$package"
source_tree=$(pgvector_source_tree)
make -s -C "$source_tree" install PG_CONFIG="$PG_CONFIG" DESTDIR="$root" >/dev/null
below_source_root "$root"
install -D -m 0644 "$source_tree/LICENSE" "$root/usr/share/doc/$package/copyright"
rm -f "$out/${package}"_*.deb
vector_deb=$(build_deb "$root" "$package" "$PGVECTOR_VERSION-0clipsearch1" "postgresql-$PG_MAJOR" \
  "Open-source vector similarity search for PostgreSQL $PG_MAJOR
 pgvector $PGVECTOR_VERSION, built from Debian's source package for clip_search.")

echo "$vector_deb"
echo "$clip_deb"
if ((want_install)); then
  log "installing both packages with apt-get"
  # --reinstall: a rebuilt package of an unchanged version still replaces what is installed.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall "$vector_deb" "$clip_deb" >/dev/null
fi
