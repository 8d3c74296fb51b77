#!/usr/bin/env bash
# The Debian package, installed as a user installs it: builds the packages (scripts/package.sh), installs them with
# `apt-get install ./...deb`, checks that the installed files are the package's and complete (the library, the
# ONNX Runtime library, the control file, the install script and every upgrade script in sql/), then in a fresh
# cluster creates the extension and embeds a text and an image with the fixture model, compared with open_clip's
# reference embeddings. Then `apt-get remove` must remove every file the package installed. The package is
# installed again at the end, for the suites that run after this one. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

debs=$(scripts/package.sh)
vector_deb=$(grep -- '-pgvector_' <<<"$debs")
clip_deb=$(grep -- '-clip-search_' <<<"$debs")
package=$(dpkg-deb --field "$clip_deb" Package)
version=$(cargo_package_field version)
echo "$clip_deb:"
dpkg-deb --field "$clip_deb" Version Depends
dpkg-deb --contents "$clip_deb" | awk '{ print "  " $3 "\t" $6 }'

apt_get() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -y -qq "$@" >/dev/null; }
apt_get install --reinstall "$vector_deb" "$clip_deb"

# The files are the package's (dpkg --verify compares them with the package's md5sums), and they are all there.
dpkg --verify "$package" || { echo "FAIL: installed files differ from the package"; exit 1; }
mapfile -t installed < <(dpkg -L "$package" | while read -r path; do [[ -f $path ]] && echo "$path"; done)
expected=("$(pg_pkglibdir)/clip_search.so" "$(pg_pkglibdir)/clip_search/libonnxruntime.so.$ORT_VERSION"
          "$(pg_sharedir)/extension/clip_search.control" "$(pg_sharedir)/extension/clip_search--$version.sql")
for upgrade in sql/clip_search--*--*.sql; do expected+=("$(pg_sharedir)/extension/$(basename "$upgrade")"); done
declare -A is_installed
for path in "${installed[@]}"; do is_installed[$path]=1; done
for path in "${expected[@]}"; do
  [[ -n ${is_installed[$path]:-} ]] || { echo "FAIL: the package does not install $path"; exit 1; }
done
echo "installed ${#installed[@]} files, among them the ${#expected[@]} expected"

# A fresh cluster of its own.
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

apt_get remove "$package"
for path in "${installed[@]}"; do
  [[ ! -e $path ]] || { echo "FAIL: $path is still there after apt-get remove"; exit 1; }
done
[[ ! -e "$(pg_pkglibdir)/clip_search" ]] || { echo "FAIL: $(pg_pkglibdir)/clip_search is still there"; exit 1; }
echo "apt-get remove removed all ${#installed[@]} files"

apt_get install "$clip_deb"
