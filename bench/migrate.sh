#!/usr/bin/env bash
# Migrations to another model (clip_migrate), on the demo's model (ViT-B-32, random weights; a release build): the
# rows per second at which the background worker fills the new column, for texts and for the demo photos, against
# clip_backfill of the same rows with the same model in the same run (the reference: one session embedding as fast
# as it can, in batches of 64). The model directory is registered under two names, 'before' and 'after', so that
# both measure the same model; which model the old column holds costs a migration nothing. Uses a cluster of its
# own ('migrate', as tests/migrate.sh) with shared_preload_libraries. Prints a Markdown table.
#   bench/migrate.sh [TEXT_ROWS] [IMAGE_ROWS]     (defaults 10000, and 160: the 16 demo photos, 10 times)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
text_rows=${1:-10000} image_rows=${2:-160}
CLIP_MODEL_DIR="" prepare_demo demo random >/dev/null   # release build, the ViT-B-32 export and the photos
model_dir=$DEMO_MODEL_DIR photos=$(realpath "$DEMO_PHOTOS")
db=clip_migrate_bench
q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
start_preloaded_cluster migrate "$db" "clip.worker_naptime = 100" "clip.model_dir = '$model_dir'"
cluster_env migrate
trap 'scripts/cluster.sh stop migrate' EXIT
q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
SELECT clip_register_model('before', '$model_dir');
SELECT clip_register_model('after', '$model_dir');
CREATE TABLE texts (id int PRIMARY KEY, source text NOT NULL, embedding vector(512));
INSERT INTO texts SELECT i, 'a note about topic ' || i || ' and a few more words' FROM generate_series(1, $text_rows) i;
CREATE TABLE images (id int PRIMARY KEY, source bytea NOT NULL, embedding vector(512));
INSERT INTO images SELECT i, pg_read_binary_file('$photos/' || f)
FROM (SELECT row_number() OVER () AS i, f FROM generate_series(1, ($image_rows + 15) / 16), pg_ls_dir('$photos') f) s
WHERE i <= $image_rows;
CREATE INDEX ON texts USING hnsw (embedding vector_cosine_ops);
CREATE INDEX ON images USING hnsw (embedding vector_cosine_ops);
SELECT vector_dims(clip_embed_text('warm up the model files', model => 'before'));
SQL

seconds() { date +%s.%N; }
results=()
for table in texts images; do
  rows=$(q -c "SELECT count(*) FROM $table")
  start=$(seconds)
  q -c "SET client_min_messages = warning" -c "CALL clip_backfill('$table', 'source', 'embedding', model => 'before')"
  backfilled=$(seconds)
  q -c "SELECT clip_migrate('$table', 'source', 'embedding', 'after')" >/dev/null
  for ((i = 0; i < 72000; i++)); do
    [[ $(q -c "SELECT rows_pending = 0 FROM clip_migrations") == t ]] && break
    sleep 0.05
  done
  migrated=$(seconds)
  q -c "SELECT clip_migrate_switch('$table', drop_old => true)" >/dev/null
  [[ $(q -c "SELECT count(*) FROM $table WHERE embedding IS NULL") == 0 ]] || die "migrate: rows left unembedded"
  results+=("$(awk -v t="$table" -v n="$rows" -v s="$start" -v b="$backfilled" -v m="$migrated" 'BEGIN {
    printf "| %s | %d | %.1f | %.1f | %.1f | %.1f | %.2f |", t, n, b - s, n / (b - s), m - b, n / (m - b),
           (b - s) / (m - b) }')")
done

echo
echo "| rows | n | clip_backfill s | clip_backfill rows/s | migration s | migration rows/s | migration / backfill rate |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${results[@]}"
echo
echo "clip.batch_size $(q -c "SHOW clip.batch_size"), clip.intra_op_threads $(q -c "SHOW clip.intra_op_threads");" \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
