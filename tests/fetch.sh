#!/usr/bin/env bash
# clip-fetch (crates/clip_fetch) against a local emulator of the Hugging Face hub (tests/hub/emulator.py) serving the
# tiny models of tests/fixtures/immich in Immich's layout, then the installed models inside PostgreSQL:
#   - each family installs, from the hub and with --from, and nothing but the model's directory is left;
#   - the hub's own client, huggingface_hub (tests/hub/requirements.txt), downloads a repository from the emulator,
#     and clip-fetch --from installs the folder it wrote: the air-gapped path, and the emulator's protocol checked;
#   - the CLIP fixture with its towers' weights in external data files, as Immich's exporter saves them, installs
#     and gives the embeddings the fixture gives;
#   - a connection cut in the middle of a file is resumed with a Range request, within a run and by a second run
#     after the first was killed; a file whose size or content is wrong, a missing file, an unknown model, a hub that
#     does not answer, a graph the extension does not know, a full or read-only disk: each fails with its own message
#     and leaves no model directory;
#   - per family, on the private cluster 'fetch': the token ids of clip_tokenize and the embeddings of
#     clip_embed_text (in each language the reference has) and clip_embed_image equal open_clip's under the same
#     weights (cosine >= 0.9999 for texts, >= 0.999 for images), clip_embed_texts runs a graph of a batch of one,
#     and clip_info() says where the model came from.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2

fixtures="$ROOT/tests/fixtures/immich"
families=(clip clip-legacy siglip2 mobileclip xlm-roberta nllb)
work="$ROOT/target/fetch"
models="$work/models"
rm -rf "$work" && mkdir -p "$work"

log "fetch: building clip-fetch"
cargo build -p clip_fetch --quiet
fetch() { "$ROOT/target/debug/clip-fetch" --models "$models" --quiet "$@"; }

# Repositories with a defect of their own, made from the CLIP fixture.
cp -r "$fixtures/clip/model" "$work/incomplete" && rm "$work/incomplete/textual/tokenizer_config.json"
cp -r "$fixtures/clip/model" "$work/wrong-graph" && cp "$work/wrong-graph/textual/model.onnx" "$work/wrong-graph/visual/"
repos=(--repo test/incomplete="$work/incomplete" --repo test/wrong-graph="$work/wrong-graph")
for family in "${families[@]}"; do repos+=(--repo "test/$family=$fixtures/$family/model"); done

# The Python tools: the hub's own client, and onnx.
hub_venv=$(python_env venv-hub tests/hub/requirements.txt huggingface_hub onnx) || die "fetch: no Python environment"
# The CLIP fixture as Immich's exporter writes it last: each tower saved again by onnx.save(save_as_external_data=True,
# all_tensors_to_one_file=True), its weights in one file named <uuid>.data beside model.onnx.
"$hub_venv/bin/python" - "$fixtures/clip/model" "$work/external" <<'EOF'
import shutil, sys, onnx
source, folder = sys.argv[1:]
shutil.copytree(source, folder)
for tower in ("visual", "textual"):
    path = f"{folder}/{tower}/model.onnx"
    onnx.save(onnx.load(path), path, save_as_external_data=True, all_tensors_to_one_file=True)
EOF
repos+=(--repo test/clip-external="$work/external")

emulator_pid=""
mounted=()
cleanup() {
  [[ -n $emulator_pid ]] && kill "$emulator_pid" 2>/dev/null
  local m
  for m in "${mounted[@]}"; do umount "$m" 2>/dev/null; done
  scripts/cluster.sh stop fetch
}
trap cleanup EXIT
python3 tests/hub/emulator.py --port 0 --page-size 3 --log "$work/requests.log" "${repos[@]}" >"$work/emulator.out" &
emulator_pid=$!
wait_until 30 grep -qs '^listening on ' "$work/emulator.out" || die "fetch: the hub emulator did not start"
export HF_ENDPOINT
HF_ENDPOINT=$(sed -n 's/^listening on //p' "$work/emulator.out")
faults() { curl -sf -X POST --data "$1" "$HF_ENDPOINT/_emulator/faults" >/dev/null; }

failures=0
fail() { log "FAILED: $*"; failures=$((failures + 1)); }
# No model directory NAME, and no staging folder but those a resumable download keeps.
not_installed() { [[ ! -e "$models/$1" ]] || fail "$1 is installed after a failure"; }
# Runs clip-fetch ARGS..., which must fail with a message matching PATTERN and leave no model NAME.
expect_refusal() {
  local what=$1 pattern=$2 name=$3
  shift 3
  local status=0
  fetch "$@" 2>"$work/stderr" >/dev/null || status=$?
  if ((status == 0)); then
    fail "$what: clip-fetch succeeded"
  elif ! grep -qE "$pattern" "$work/stderr"; then
    fail "$what: the message does not match /$pattern/: $(cat "$work/stderr")"
  else
    log "fetch: $what: $(head -c 300 "$work/stderr")"
  fi
  not_installed "$name"
}

log "fetch: every family from the hub, and from a folder"
for family in "${families[@]}"; do
  fetch "test/$family" >/dev/null || fail "test/$family did not install"
  [[ -f "$models/$family/manifest.json" ]] || fail "$family has no manifest"
  fetch --from "$fixtures/$family/model" "$family-copy" >/dev/null || fail "--from $family did not install"
done
leftovers=$(find "$models/.partial" -mindepth 1 ! -name '*.lock' | head -5)
[[ -z $leftovers ]] || fail "staging folders left after successful installs: $leftovers"

log "fetch: towers whose weights are in an external data file"
fetch test/clip-external >/dev/null || fail "test/clip-external did not install"
python3 -c 'import json, re, sys; files = json.load(open(sys.argv[1]))["files"]
sys.exit(not all(re.fullmatch(r"(textual|visual)/[-0-9a-f]+[.]data", files[t]["data"]["path"]) for t in ("text", "image")))' \
  "$models/clip-external/manifest.json" || fail "the manifest of clip-external does not name both towers' data files"

log "fetch: the hub's own client (huggingface_hub) downloads a repository, clip-fetch --from installs its folder"
# As `hf download REPO` does: into its cache, which gives a folder of links to the files.
snapshot=$(HF_HOME="$work/hf-home" HF_HUB_DISABLE_TELEMETRY=1 "$hub_venv/bin/python" -c '
import sys
from huggingface_hub import snapshot_download
print(snapshot_download(sys.argv[1], endpoint=sys.argv[2]))' test/siglip2 "$HF_ENDPOINT" 2>"$work/stderr") \
  || fail "huggingface_hub did not download from the emulator: $(tail -5 "$work/stderr")"
[[ -L $snapshot/textual/model.onnx ]] || fail "huggingface_hub's snapshot has no links: $snapshot"
diff -r "$fixtures/siglip2/model" "$snapshot" >&2 || fail "huggingface_hub's download differs from the repository"
fetch --from "$snapshot" siglip2-hf >/dev/null || fail "--from huggingface_hub's snapshot did not install"
expect_refusal "installed twice" "already installed" other-name test/clip
fetch --force test/clip >/dev/null || fail "--force did not replace the installed model"
# The cases below each start without the model installed.
installed=$models
models="$work/scenarios"

log "fetch: a connection cut in the middle of a file is resumed within the run"
faults '["cut:visual/model.onnx:100000"]'
: >"$work/requests.log"
fetch test/clip-legacy >/dev/null 2>"$work/stderr" || fail "a cut transfer was not resumed: $(cat "$work/stderr")"
grep -q 'bytes=100000- 206' "$work/requests.log" || fail "no Range request after the cut: $(cat "$work/requests.log")"

log "fetch: a run killed in the middle of a file, resumed by the next run"
faults '["slow:textual/model.onnx:400000"]'
"$ROOT/target/debug/clip-fetch" --models "$models" --quiet test/mobileclip >/dev/null 2>&1 &
fetch_pid=$!
partial() { find "$models/.partial" -path '*mobileclip@*/textual/model.onnx' -size +200k | grep -q .; }
wait_until 60 partial || fail "the slow transfer never got going"
expect_refusal "a second run while the first downloads" "another clip-fetch is installing this model" mobileclip \
  test/mobileclip
kill "$fetch_pid" && wait "$fetch_pid" 2>/dev/null || true
not_installed mobileclip
faults '[]'
: >"$work/requests.log"
fetch test/mobileclip >/dev/null || fail "the second run did not finish the model"
grep -qE 'bytes=[1-9][0-9]*- 206' "$work/requests.log" || fail "the second run did not resume: $(cat "$work/requests.log")"

log "fetch: refusals, each leaving nothing installed"
faults '["corrupt:textual/model.onnx"]'
expect_refusal "a corrupted file" "corrupted in transfer" siglip2 test/siglip2
find "$models/.partial" -path '*siglip2@*/textual/model.onnx' | grep -q . && fail "the corrupted file was kept"
faults '["size:visual/model.onnx:1000"]'
expect_refusal "a file longer than the hub says" "more than its 1000 bytes" xlm-roberta test/xlm-roberta
faults '[]'
expect_refusal "a repository without a file of the layout" "has no textual/tokenizer_config.json" incomplete test/incomplete
expect_refusal "an unknown model" "no model repository immich-app/ViT-Nothing__here" ViT-Nothing__here ViT-Nothing__here
expect_refusal "a graph the extension does not know" "visual/model.onnx: .*not float32 pixels" wrong-graph test/wrong-graph
expect_refusal "a hub that does not answer" "does not answer" nllb --endpoint http://127.0.0.1:1 test/nllb
expect_refusal "a folder that is not a model" "has no config.json" empty --from "$work/no-such-folder" empty
if mkdir -p "$work/full" "$work/readonly" && mount -t tmpfs -o size=1m tmpfs "$work/full" 2>/dev/null; then
  mounted+=("$work/full")
  mount -t tmpfs -o ro tmpfs "$work/readonly" && mounted+=("$work/readonly")
  models="$work/full" expect_refusal "a disk too small" "MB free; the model needs" clip test/clip
  models="$work/readonly" expect_refusal "a read-only disk" "Read-only file system" clip test/clip
  umount "${mounted[@]}" && mounted=()
else
  log "fetch: full and read-only disks not tested: tmpfs cannot be mounted here"
fi

log "fetch: the installed models inside PostgreSQL (cluster 'fetch')"
cluster_env fetch
scripts/cluster.sh stop fetch
rm -rf "$PGDATA"
scripts/cluster.sh start fetch
[[ $(id -u) -eq 0 ]] && chown -R postgres "$installed"
q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
q -c "CREATE EXTENSION clip_search CASCADE" >/dev/null
declare -A results
for family in "${families[@]}"; do
  result=$(q -v dir="$installed/$family" -v ref="$fixtures/$family/reference.json" -v images="$ROOT/tests/fixtures/images/" \
    -f tests/fetch_parity.sql)
  log "fetch: $family: $result"
  results[$family]=$result
  [[ $result == *"ids differ 0,"*"batch differs 0" ]] || fail "$family: $result"
  awk -v r="$result" 'BEGIN { split(r, f, /[ ,]+/); for (i in f) if (f[i] == "texts") t = f[i + 1]; else if (f[i] == "images") m = f[i + 1];
                              exit !(t >= 0.9999 && m >= 0.999) }' || fail "$family: an embedding differs from open_clip's: $result"
done

result=$(q -v dir="$installed/clip-external" -v ref="$fixtures/clip/reference.json" \
  -v images="$ROOT/tests/fixtures/images/" -f tests/fetch_parity.sql)
log "fetch: clip-external: $result"
[[ $result == "${results[clip]}" ]] || fail "clip-external does not give clip's embeddings: $result"

source=$(q -c "SET clip.model_dir = '$installed/clip'" -c "SELECT clip_info()->>'source'")
[[ $source == "$HF_ENDPOINT/test/clip at revision "* ]] || fail "clip_info() gives the source $source"

((failures == 0)) || die "fetch: $failures failures"
log "fetch: all passed"
