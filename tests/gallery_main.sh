#!/usr/bin/env bash
# The main job, scripts/gallery.sh, run as a user runs it, but from the private PostgreSQL installation 'suites'
# (CLIP_PRIVATE_POSTGRES), on the cluster 'gallery-main', on a free HTTP port and with models folders of its own
# (CLIP_MODELS_DIR, under target/gallery_main), so that a user's demo cluster and models are left alone:
#   1. the hub emulator (tests/hub/emulator.py) serves the tiny model in Immich's layout
#      (tests/fixtures/immich/clip/model) as the recommended model's repository, and HF_ENDPOINT points at it:
#      clip-fetch installs the model, the output says which model it serves, /api/stats names it with the
#      emulator's address as its source and no notice, and a text search ranks the 16 photos;
#   2. nothing listens at HF_ENDPOINT and CLIP_RANDOM_MODEL_DIR names the tiny fixture model: the output says that it
#      fell back to random weights and clip-fetch's reason, the server's start-up line carries the notice,
#      /api/stats has it, the page has the elements that show it beside the results, and a text search answers.
# Stops the servers, the emulator and the cluster it started. Every wait is a bounded poll. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
out="$ROOT/target/gallery_main"
hub_model=tests/fixtures/immich/clip/model
[[ -f $hub_model/textual/model.onnx ]] || die "gallery_main: no $hub_model (tools/immich_models.py makes it)"
rm -rf "$out" && mkdir -p "$out"

emulator_pid="" gallery_pid=""
# Ends the process PID, if any, and waits for it (ended by the signal, it exits non-zero: no error here).
end_process() { [[ -z $1 ]] || { kill "$1" && wait "$1"; } 2>/dev/null || true; }
stop_gallery() { end_process "$gallery_pid"; gallery_pid=""; }
cleanup() {
  stop_gallery
  end_process "$emulator_pid"
  scripts/cluster.sh stop gallery-main
}
trap cleanup EXIT
# A fresh cluster: one left running may run from another installation, and the first run must be a first run.
scripts/cluster.sh stop gallery-main
(cluster_env gallery-main && rm -rf "$PGDATA")

fail() {
  echo "FAIL: $*"
  echo "--- the output of scripts/gallery.sh (last 40 lines):"
  tail -40 "$out/$run.err"
  exit 1
}
# Whether the JSON document $1 satisfies the Python expression $2 over it (j), with $3 as `arg`.
json_is() {
  python3 -c 'import json, sys; j = json.loads(sys.argv[1]); arg = sys.argv[3]; sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$1" "$2" "${3:-}"
}
has_listened() { grep -q '^clip-gallery: listening on ' "$out/$run.out" || ! kill -0 "$gallery_pid" 2>/dev/null; }

# Runs scripts/gallery.sh in the background as run $1 (its stdout and stderr in $out/$1.out and .err) with the
# settings above and the environment NAME=VALUE... that follows; waits until its server listens and sets url.
# The first run builds and installs a release build of the extension: the wait allows for a cold build.
start_gallery() {
  run=$1
  shift
  log "gallery_main: $run: scripts/gallery.sh $*"
  env -u CLIP_MODEL_DIR -u CLIP_RANDOM_MODEL_DIR CLIP_PRIVATE_POSTGRES=suites CLIP_GALLERY_CLUSTER=gallery-main \
    CLIP_GALLERY_HTTP_PORT=0 "$@" scripts/gallery.sh >"$out/$run.out" 2>"$out/$run.err" &
  gallery_pid=$!
  wait_until 3600 has_listened || fail "scripts/gallery.sh did not finish its set-up within an hour"
  url=$(sed -n 's/^clip-gallery: listening on //p' "$out/$run.out")
  [[ -n $url ]] || fail "scripts/gallery.sh ended before its server listened"
  log "gallery_main: $run: the gallery listens on $url"
}

# Whether a text search answers with K results, each with its score.
search_answers() {
  local k=$1 results
  results=$(curl -sf "$url/api/search?q=a+photo+of+a+cat&k=$k") || fail "GET /api/search failed"
  json_is "$results" 'len(j["results"]) == int(arg) and all("score" in r for r in j["results"])' "$k" \
    || fail "the text search did not rank $k photos: $results"
}

# 1. The recommended model from the hub (the emulator).
python3 tests/hub/emulator.py --port 0 --repo "immich-app/$RECOMMENDED_MODEL=$hub_model" \
  >"$out/emulator.out" 2>"$out/emulator.err" &
emulator_pid=$!
emulator_listens() { grep -q '^listening on ' "$out/emulator.out" || ! kill -0 "$emulator_pid" 2>/dev/null; }
wait_until 60 emulator_listens
endpoint=$(sed -n 's/^listening on //p' "$out/emulator.out")
[[ -n $endpoint ]] || { cat "$out/emulator.err"; die "gallery_main: the hub emulator did not start"; }

start_gallery hub HF_ENDPOINT="$endpoint" CLIP_MODELS_DIR="$out/models"
[[ -f "$out/models/$RECOMMENDED_MODEL/manifest.json" ]] || fail "clip-fetch did not install the model into $out/models"
grep -q "model: $RECOMMENDED_MODEL, pretrained weights" "$out/$run.err" || fail "the output does not say which model"
grep -qi "falling back" "$out/$run.err" && fail "the output speaks of a fallback"
stats=$(curl -sf "$url/api/stats") || fail "GET /api/stats failed"
echo "hub: /api/stats: $stats"
json_is "$stats" 'j["model"] == arg' "$RECOMMENDED_MODEL" || fail "/api/stats does not name $RECOMMENDED_MODEL"
json_is "$stats" 'j["source"].startswith(arg + " at revision ")' "$endpoint/immich-app/$RECOMMENDED_MODEL" \
  || fail "/api/stats's source is not the emulator's repository"
json_is "$stats" 'j["notice"] is None and j["images"] == 16' || fail "a notice, or not the 16 photos"
search_answers 5
echo "hub: ok: $RECOMMENDED_MODEL from $endpoint, no notice, a text search ranks the photos"
stop_gallery

# 2. No hub: the fallback to random weights.
start_gallery offline HF_ENDPOINT=http://127.0.0.1:1 CLIP_MODELS_DIR="$out/models-offline" \
  CLIP_RANDOM_MODEL_DIR=tests/fixtures/tiny-model
grep -q "could not fetch the recommended model $RECOMMENDED_MODEL: clip-fetch: ." "$out/$run.err" \
  || fail "the output does not say why the fetch failed"
grep -q "FALLING BACK to a model with RANDOM weights" "$out/$run.err" || fail "the output does not say it fell back"
[[ ! -e "$out/models-offline/$RECOMMENDED_MODEL" ]] || fail "a failed fetch left $out/models-offline/$RECOMMENDED_MODEL"
# The server's start-up line, after the set-up's output.
sed -n '/starting the gallery/,$p' "$out/$run.err" | grep -q '^clip-gallery: model clip-tiny (random weights.*random weights: the rankings' \
  || fail "the server's start-up line does not carry the notice"
stats=$(curl -sf "$url/api/stats") || fail "GET /api/stats failed"
echo "offline: /api/stats: $stats"
json_is "$stats" 'j["model"] == "clip-tiny" and j["source"] is None and j["images"] == 16' \
  || fail "/api/stats does not describe the fixture model and the 16 photos"
json_is "$stats" '"random weights" in (j["notice"] or "") and "clip-fetch" in j["notice"]' \
  || fail "/api/stats has no notice of random weights"
page=$(curl -sf "$url/") || fail "GET / failed"
for id in search-notice similar-notice; do
  grep -q "id=\"$id\" class=\"notice\"" <<<"$page" || fail "the page has no notice element $id"
done
search_answers 3
echo "offline: ok: fell back to random weights, said so on the terminal, in the server's start-up line, in /api/stats and on the page"
