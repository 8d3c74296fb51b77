#!/usr/bin/env bash
# Ingest of phone-size photos by the background workers, against open_clip's own pipeline on the same photos: the
# photos (4032x3024 JPEGs made from the demo's real photos by bench/ingest.py make) are loaded into a table, then a
# watch embeds them with 1, then 2 workers for the database (clip.workers_per_database, one thread each, batches of
# 16), then with 1 worker of 2 threads (clip.intra_op_threads: it decodes a batch's photos 2 at a time, then embeds
# them with 2 inference threads), all exactly, then with 1 and 2 workers and clip.jpeg_draft. The reference is a
# torch DataLoader whose worker processes decode while the model embeds batches of 16 (bench/ingest.py reference),
# with 1 thread and 1 loader process, then 2 and 2. The demo's model (ViT-B-32, random weights), a release build, a
# cluster of its own ('ingest'). Prints Markdown tables: images/s and the scaling from 1 to 2 cores; the cosines of
# the exact embeddings against open_clip's and of the draft's against the exact ones; the time to decode and resize
# one photo, exact, with the draft and with Pillow (crates/clip_core/examples/decode_timing.rs, bench/ingest.py
# decode).
#   bench/ingest.sh [PHOTOS]     (default 2000; the photos are kept in .deps/bench/phone-photos, about 1 MB each)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
count=${1:-2000}
CLIP_MODEL_DIR="" prepare_demo demo random >/dev/null   # release build, the ViT-B-32 export and the photos
scripts/setup.sh --python
model_dir=$DEMO_MODEL_DIR
phones="$DEPS/bench/phone-photos"
log "ingest: $count phone-size photos in $phones"
"$VENV/bin/python" bench/ingest.py make --photos "$DEMO_PHOTOS" --out "$phones" --count "$count"
[[ $(id -u) -ne 0 ]] || chmod o+rx "$DEPS" "$DEPS/bench" "$phones"

db=clip_ingest
cluster_env ingest
q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
trap 'scripts/cluster.sh stop ingest' EXIT
start_preloaded_cluster ingest "$db" "clip.model_dir = '$model_dir'" "clip.worker_naptime = 100" \
  "clip.batch_size = 16" "clip.intra_op_threads = 1" "max_wal_size = 8GB"
q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
CREATE TABLE phones (id int PRIMARY KEY, image bytea NOT NULL, embedding vector(512));
ALTER TABLE phones ALTER COLUMN image SET STORAGE EXTERNAL;  -- JPEGs do not compress
INSERT INTO phones SELECT i, pg_read_binary_file(format('%s/phone-%s.jpg', '$phones', lpad(i::text, 5, '0')))
FROM generate_series(0, $count - 1) i;
SELECT vector_dims(clip_embed_text('warm up the model files'));
SQL

rows=()
for run in "1 1 off" "2 1 off" "1 2 off" "1 1 on" "2 1 on"; do
  read -r workers threads draft <<<"$run"
  printf '%s\n' "clip.workers_per_database = $workers" "clip.intra_op_threads = $threads" \
    "clip.jpeg_draft = $draft" >>"$PGDATA/postgresql.conf"
  scripts/cluster.sh stop ingest
  scripts/cluster.sh start ingest
  wait_for_sql "$db" "SELECT count(*) = $workers FROM pg_stat_activity WHERE backend_type = 'clip_search worker'" 60
  log "ingest: $workers worker(s), $threads thread(s) each, clip.jpeg_draft = $draft"
  q -c "UPDATE phones SET embedding = NULL" -c "VACUUM phones"
  started=$(date +%s.%N)
  q -c "SELECT clip_watch('phones', 'image', 'embedding')" >/dev/null
  wait_for_sql "$db" "SELECT count(embedding) = $count FROM phones" 36000
  seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  q -c "SELECT clip_unwatch('phones')" >/dev/null
  if [[ $workers$threads == 11 ]]; then
    q -c "COPY (SELECT embedding FROM phones ORDER BY id) TO STDOUT" >"$DEPS/bench/ingest-clip-$draft.txt"
  fi
  pipeline="clip_search, the watch"
  [[ $draft == on ]] && pipeline="clip_search, the watch, clip.jpeg_draft"
  rows+=("$pipeline	$workers worker(s), $threads thread(s) each	$seconds")
done
scripts/cluster.sh stop ingest

# Decoding and resizing alone, on one core: clip_search's exact and draft paths, and Pillow's, on the same photos.
log "ingest: decoding and resizing 10 photos, 3 rounds"
decode_photos=("$phones"/phone-0000[0-9].jpg)
ours=$(cargo run -q --release -p clip_core --example decode_timing -- 3 "${decode_photos[@]}")
pillow=$("$VENV/bin/python" bench/ingest.py decode --photos "$phones" --count 10 --rounds 3)

for run in "1 1" "2 2"; do
  read -r threads loaders <<<"$run"
  log "ingest: open_clip, $threads thread(s), $loaders loader process(es)"
  json=$("$VENV/bin/python" bench/ingest.py reference --model-dir "$model_dir" \
    --checkpoint "$DEPS/bench/ViT-B-32-seed0.pt" --photos "$phones" --count "$count" --threads "$threads" \
    --loader-workers "$loaders" --embeddings "$DEPS/bench/ingest-open_clip.npy")
  rows+=("open_clip, DataLoader	$threads thread(s), $loaders loader process(es)	$("$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["seconds"])' <<<"$json")")
done

# The mean and lowest cosine, photo by photo, of two sets of embeddings (COPY text or .npy).
cosine() {
  "$VENV/bin/python" - "$1" "$2" <<'PY'
import sys, numpy as np
def load(path):
    if path.endswith(".npy"):
        return np.load(path)
    return np.array([[float(x) for x in line.strip()[1:-1].split(",")] for line in open(path)])
a, b = load(sys.argv[1]), load(sys.argv[2])
a /= np.linalg.norm(a, axis=1, keepdims=True)
b /= np.linalg.norm(b, axis=1, keepdims=True)
c = (a * b).sum(1)
print(f"{c.mean():.6f} mean, {c.min():.6f} lowest")
PY
}
cosine_open_clip=$(cosine "$DEPS/bench/ingest-clip-off.txt" "$DEPS/bench/ingest-open_clip.npy")
cosine_draft=$(cosine "$DEPS/bench/ingest-clip-on.txt" "$DEPS/bench/ingest-clip-off.txt")
field() { "$VENV/bin/python" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

echo
echo "bench/ingest.sh $count, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')):"
echo
echo "| pipeline | processes | images | seconds | images/s | 1 -> 2 |"
echo "| --- | --- | --- | --- | --- | --- |"
# The first row of each pipeline is its baseline for the scaling column.
baseline_pipeline="" baseline_rate=""
for row in "${rows[@]}"; do
  IFS=$'\t' read -r pipeline processes seconds <<<"$row"
  rate=$(awk -v n="$count" -v s="$seconds" 'BEGIN { printf "%.2f", n / s }')
  scaling=""
  if [[ $pipeline == "$baseline_pipeline" ]]; then
    scaling=$(awk -v r="$rate" -v b="$baseline_rate" 'BEGIN { printf "%.2fx", r / b }')
  else
    baseline_pipeline=$pipeline baseline_rate=$rate
  fi
  printf '| %s | %s | %d | %.1f | %s | %s |\n' "$pipeline" "$processes" "$count" "$seconds" "$rate" "$scaling"
done
echo
echo "Cosine of clip_search's embeddings (1 worker) against open_clip's, per photo: $cosine_open_clip."
echo "Cosine of clip_search's embeddings with clip.jpeg_draft against the exact ones, per photo: $cosine_draft."
echo
echo "Decoding and resizing one $(field "$ours" size) JPEG to the 224x224 crop, median of 10 photos x 3 rounds:"
echo
echo "| path | ms |"
echo "| --- | --- |"
echo "| clip_search, exact (libjpeg-turbo as Pillow, the crop's window resized) | $(field "$ours" exact_ms) |"
echo "| clip_search, clip.jpeg_draft (decoded at $(field "$ours" draft_size)) | $(field "$ours" draft_ms) |"
echo "| Pillow, open_clip's Resize and CenterCrop | $(field "$pillow" pillow_ms) |"
echo "| Pillow after draft('RGB', (224, 224)) | $(field "$pillow" pillow_draft_ms) |"
echo
echo "The draft's crops against the exact ones: $(field "$ours" crop_mean_diff) levels on average, at most\
 $(field "$ours" crop_max_diff)."
