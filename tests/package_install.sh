#!/usr/bin/env bash
# The Debian packages, installed as dpkg installs them, but into a private PostgreSQL installation (use_private_postgres
# 'suites', the one scripts/test.sh runs the SQL suites on), so that the system's PostgreSQL and the clusters that
# run from it are left alone. Builds the packages (scripts/package.sh) and proves:
#   - their dependencies resolve on this system: `apt-get install -s` of both .deb files, a simulation against the
#     system's packages that installs nothing, must succeed and install clip_search;
#   - the package installs the expected files, and they are the package's: `dpkg --root` installs both packages
#     into the private installation's folder, whose layout is the system's (with a dpkg database of its own there:
#     see private_dpkg in scripts/lib.sh), `dpkg --verify` compares the installed files with the package's md5sums,
#     and `dpkg -L` must list the library, the ONNX Runtime library, the control file, the install script and every
#     upgrade script in sql/;
#   - the installed package works: in a fresh cluster started from that installation, the extension is created at
#     the package's version, the backend loads the packaged ONNX Runtime, and a text's and an image's embeddings
#     with the fixture model match open_clip's reference embeddings;
#   - `dpkg --remove` removes every file the package installed.
# The package is installed again at the end, for the suites that run after this one. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
use_private_postgres suites

debs=$(scripts/package.sh)
vector_deb=$(grep -- '-pgvector_' <<<"$debs")
clip_deb=$(grep -- '-clip-search_' <<<"$debs")
package=$(dpkg-deb --field "$clip_deb" Package)
version=$(cargo_package_field version)
echo "$clip_deb:"
dpkg-deb --field "$clip_deb" Version Depends
dpkg-deb --contents "$clip_deb" | awk '{ print "  " $3 "\t" $6 }'

# The dependencies, against the system's packages (a simulation: apt-get installs nothing). Not for a server built
# from source, which apt does not know of here (the package then depends on the PostgreSQL apt repository's).
if [[ -z $PG_SOURCE_ROOT ]]; then
  simulation=$(apt-get install -s --reinstall "$vector_deb" "$clip_deb" 2>&1) \
    || { echo "$simulation"; echo "FAIL: apt-get cannot install the packages on this system"; exit 1; }
  grep -q "^Inst $package " <<<"$simulation" || { echo "$simulation"; echo "FAIL: apt-get would not install $package"; exit 1; }
  echo "apt-get install -s: the dependencies resolve"
else
  echo "apt-get install -s: skipped, PostgreSQL $PG_MAJOR was built from source ($PG_SOURCE_ROOT)"
fi

private_dpkg --install "$vector_deb" "$clip_deb"

# The files are the package's (dpkg --verify compares them with the package's md5sums), and they are all there.
dpkg --root="$PG_ROOT" --verify "$package" || { echo "FAIL: installed files differ from the package"; exit 1; }
mapfile -t installed < <(dpkg --root="$PG_ROOT" -L "$package" | while read -r path; do
  [[ -f $PG_ROOT$path ]] && echo "$PG_ROOT$path"
done)
expected=("$(pg_pkglibdir)/clip_search.so" "$(pg_pkglibdir)/clip_search/libonnxruntime.so.$ORT_VERSION"
          "$(pg_sharedir)/extension/clip_search.control" "$(pg_sharedir)/extension/clip_search--$version.sql")
for upgrade in sql/clip_search--*--*.sql; do expected+=("$(pg_sharedir)/extension/$(basename "$upgrade")"); done
declare -A is_installed
for path in "${installed[@]}"; do is_installed[$path]=1; done
for path in "${expected[@]}"; do
  [[ -n ${is_installed[$path]:-} ]] || { echo "FAIL: the package does not install $path"; exit 1; }
done
echo "installed ${#installed[@]} files into $PG_ROOT, among them the ${#expected[@]} expected"

# A fresh cluster of its own, started from that installation.
cluster_env package
scripts/cluster.sh stop package
rm -rf "$PGDATA"
trap 'scripts/cluster.sh stop package; rm -rf "$PGDATA"' EXIT
scripts/cluster.sh start package

reference() {  # open_clip's embedding of a fixture text or image, as a vector literal
  python3 -c 'import json, sys
ref = json.load(open("tests/fixtures/tiny-model/reference.json"))
kind, key, value = sys.argv[1:]
print(next("[" + ",".join(map(str, r["embedding"])) + "]" for r in ref[kind] if r[key] == value))' "$@"
}
image=chelsea_rgb_200x133.png
# Each embedding's cosine with open_clip's: whether it reaches 0.9999, and its value.
close_to() { echo "WITH c AS (SELECT 1 - ($1 <=> '$2') AS cosine) SELECT cosine >= 0.9999, round(cosine::numeric, 6) FROM c;"; }
output=$(scripts/cluster.sh psql package -At -F ' ' <<SQL
CREATE EXTENSION clip_search CASCADE;
SET clip.model_dir = '$ROOT/tests/fixtures/tiny-model';
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';
SELECT clip_info() ->> 'onnxruntime_library', clip_info() ->> 'onnxruntime_version';
$(close_to "clip_embed_text('a photo of a cat')" "$(reference texts text 'a photo of a cat')")
$(close_to "clip_embed_image(pg_read_binary_file('$ROOT/tests/fixtures/images/$image'))" "$(reference images file "$image")")
SQL
)
mapfile -t result <<<"$output"
printf '  %s\n' "${result[@]}"
[[ ${#result[@]} -eq 4 && ${result[0]} == "$version" ]] || { echo "FAIL: extension version is not $version"; exit 1; }
[[ ${result[1]} == "$(pg_pkglibdir)/clip_search/libonnxruntime.so.$ORT_VERSION $ORT_VERSION" ]] \
  || { echo "FAIL: the backend did not load the packaged ONNX Runtime $ORT_VERSION"; exit 1; }
[[ ${result[2]} == "t "* && ${result[3]} == "t "* ]] || { echo "FAIL: embeddings differ from open_clip's"; exit 1; }
scripts/cluster.sh stop package

private_dpkg --remove "$package"
for path in "${installed[@]}"; do
  [[ ! -e $path ]] || { echo "FAIL: $path is still there after dpkg --remove"; exit 1; }
done
[[ ! -e "$(pg_pkglibdir)/clip_search" ]] || { echo "FAIL: $(pg_pkglibdir)/clip_search is still there"; exit 1; }
echo "dpkg --remove removed all ${#installed[@]} files"

private_dpkg --install "$clip_deb"
