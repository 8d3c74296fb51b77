#!/usr/bin/env bash
# The background worker against the trigger, on the demo's model (ViT-B-32, random weights; a release build):
# rows per second that the inserting client sees, and the time until every row is embedded, for texts and images,
# and the worker's memory. Each insert is its own transaction, from one client. Uses a cluster of its own ('watch',
# as tests/watch.sh) with shared_preload_libraries. Prints a Markdown table.
#   bench/watch.sh [TEXT_ROWS] [IMAGE_ROWS]     (defaults 1000 and 160)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
text_rows=${1:-1000} image_rows=${2:-160}
CLIP_MODEL_DIR="" prepare_demo demo random >/dev/null   # release build, the ViT-B-32 export and the photos
model_dir=$DEMO_MODEL_DIR photos=$DEMO_PHOTOS
cluster_env watch
db=clip_watch_bench
q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

scripts/cluster.sh stop watch
rm -rf "$PGDATA"
scripts/cluster.sh start watch
cat >>"$PGDATA/postgresql.conf" <<CONF
shared_preload_libraries = 'clip_search'
clip.worker_databases = '$db'
clip.worker_naptime = 100
clip.model_dir = '$model_dir'
CONF
scripts/cluster.sh stop watch
scripts/cluster.sh start watch
trap 'scripts/cluster.sh stop watch' EXIT
"$PG_BIN/createdb" -h "$PGSOCKET" -p "$PGPORT" -U postgres "$db"
q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
CREATE TABLE photos_src (n int, image bytea);
INSERT INTO photos_src SELECT row_number() OVER (), pg_read_binary_file('$(realpath "$photos")/' || f)
FROM pg_ls_dir('$(realpath "$photos")') f;
SELECT vector_dims(clip_embed_text('warm up the model files'));
SQL

seconds() { date +%s.%N; }
# Runs $2 inserts of kind $1 ('text' or 'image') into table $3, one transaction each, from one client.
insert_rows() {
  local kind=$1 n=$2 table=$3
  if [[ $kind == text ]]; then
    for i in $(seq 1 "$n"); do echo "INSERT INTO $table (source) VALUES ('a note about topic $i and a few more words');"; done
  else
    for i in $(seq 1 "$n"); do
      echo "INSERT INTO $table (source) SELECT image FROM photos_src WHERE n = 1 + $i % (SELECT count(*) FROM photos_src);"
    done
  fi | q
}

results=()
for kind in text image; do
  n=$text_rows type=text
  [[ $kind == image ]] && n=$image_rows type=bytea
  for mode in trigger watch; do
    table="${kind}_${mode}"
    q -c "CREATE TABLE $table (id serial PRIMARY KEY, source $type NOT NULL, embedding vector(512))"
    if [[ $mode == trigger ]]; then
      q -c "CREATE TRIGGER embed BEFORE INSERT ON $table FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('source', 'embedding')"
    else
      q -c "SELECT clip_watch('$table', 'source', 'embedding')" >/dev/null
    fi
    start=$(seconds)
    insert_rows "$kind" "$n" "$table"
    inserted=$(seconds)
    for ((i = 0; i < 36000; i++)); do
      [[ $(q -c "SELECT count(*) FILTER (WHERE embedding IS NULL) FROM $table") == 0 ]] && break
      sleep 0.05
    done
    done_at=$(seconds)
    results+=("$(awk -v k="$kind" -v m="$mode" -v n="$n" -v s="$start" -v i="$inserted" -v d="$done_at" \
      'BEGIN { printf "| %s | %s | %d | %.1f | %.1f | %.1f |", k, m, n, n / (i - s), d - s, n / (d - s) }')")
  done
done
worker=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'clip_search worker'")
memory=$(awk '/^(Pss|Private_Clean|Private_Dirty|Rss):/ { kb[$1] += $2 } END {
  printf "RSS %.0f MB, PSS %.0f MB, private %.0f MB", kb["Rss:"] / 1024, kb["Pss:"] / 1024,
         (kb["Private_Clean:"] + kb["Private_Dirty:"]) / 1024 }' "/proc/$worker/smaps_rollup")

echo
echo "| rows | embedded by | rows | inserts/s the client sees | s until all embedded | rows/s embedded |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${results[@]}"
echo
echo "worker (pid $worker) after the run: $memory; load average $(cut -d' ' -f1-3 /proc/loadavg)"
