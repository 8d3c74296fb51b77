#!/usr/bin/env bash
# Load test: 8 concurrent sessions (pgbench) mix inserts through the embedding trigger, text searches and image
# searches on the demo cluster's model for a bounded time, then checks: zero errors, no crashed backend, every
# inserted row stored with its embedding and found by a search for its own image; and reports the memory of each
# pgbench backend at the end of the load (the last second all of them were alive) from /proc/PID/smaps_rollup:
# its private memory (Private_Clean + Private_Dirty) and Anonymous, and the sum of their PSS and of the whole
# cluster's. RSS and VmHWM count the pages of the mapped shared weights in every backend, so they are not shown.
# Sets up like the demo (prepare_demo in scripts/lib.sh), on ViT-B-32 with random weights unless CLIP_MODEL_DIR
# names a model; the weights are shared or not as the cluster's clip.shared_weights says (on by default).
#   scripts/loadtest.sh [SECONDS]     default 60
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
seconds=${1:-60}
clients=8
export CARGO_BUILD_JOBS=2
prepare_demo demo random
# A database of its own, made afresh on each run.
scripts/cluster.sh psql demo -c "DROP DATABASE IF EXISTS clip_load WITH (FORCE)" -c "CREATE DATABASE clip_load" >/dev/null
psql_demo() { scripts/cluster.sh psql demo -d clip_load "$@"; }
export PGDATABASE=clip_load

psql_demo -v dir="$DEMO_PHOTOS" -v files="$(cd "$DEMO_PHOTOS" && ls | paste -sd,)" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS clip_search CASCADE;
SELECT (clip_info()->>'embed_dim')::int AS dim \gset
CREATE TABLE load_sources (id int PRIMARY KEY, image bytea NOT NULL);
INSERT INTO load_sources SELECT row_number() OVER (ORDER BY name), pg_read_binary_file(:'dir' || '/' || name)
FROM unnest(string_to_array(:'files', ',')) AS name;
CREATE TABLE load_photos (id bigserial PRIMARY KEY, source_id int NOT NULL, image bytea NOT NULL, embedding vector(:dim));
CREATE TRIGGER load_photos_embed BEFORE INSERT ON load_photos
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('image', 'embedding');
INSERT INTO load_photos (source_id, image) SELECT id, image FROM load_sources;
CREATE INDEX ON load_photos USING hnsw (embedding vector_cosine_ops);
SQL
started=$(psql_demo -At -c "SELECT pg_postmaster_start_time()")

# Memory of every process of the cluster, sampled every second while the load runs: one line per process and
# sample, "sample kind pid pss private anonymous" in kB, kind "load" for the pgbench backends.
mem_log="$DEPS/loadtest-memory.txt"; : >"$mem_log"
postmaster=$(head -1 "$PGDATA/postmaster.pid")
(
  sample=0
  while sleep 1; do
    sample=$((sample + 1))
    load=" $(psql_demo -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'" 2>/dev/null | paste -sd' ') "
    for pid in $postmaster $(pgrep -P "$postmaster"); do
      kind=other; [[ $load == *" $pid "* ]] && kind=load
      awk -v s="$sample" -v kind="$kind" -v pid="$pid" '
        /^Pss:/ {pss = $2} /^Private_(Clean|Dirty):/ {private += $2} /^Anonymous:/ {anon = $2}
        END {if (pss != "") print s, kind, pid, pss, private, anon}' "/proc/$pid/smaps_rollup" 2>/dev/null || true
    done >>"$mem_log"
  done
) &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT

log_start=$(stat -c %s "$PGDATA/server.log")
log "pgbench: $clients clients for ${seconds}s (inserts 2 : text searches 5 : image searches 3)"
"$PG_BIN/pgbench" -n -c "$clients" -j "$clients" -T "$seconds" -r \
  -f bench/load/insert.sql@2 -f bench/load/text_search.sql@5 -f bench/load/image_search.sql@3 \
  2>&1 | tee "$DEPS/loadtest-pgbench.txt"
kill $sampler 2>/dev/null || true

inserted=$(awk '/SQL script 1:/ {f=1} f && /- [0-9]+ transactions/ {print $2; exit}' "$DEPS/loadtest-pgbench.txt")
failed=$(awk '/^number of failed transactions/ {print $5; exit}' "$DEPS/loadtest-pgbench.txt")
psql_demo -v inserted="$inserted" -v started="$started" <<'SQL'
\pset footer off
SELECT count(*) - 16 AS rows_inserted_by_load, :inserted AS inserts_pgbench_committed,
       count(*) FILTER (WHERE embedding IS NULL) AS rows_without_embedding
FROM load_photos;
-- Every row holds its own image's embedding, and an index search for each image finds a row of it. Each image is
-- embedded once, first: in the queries below, its embedding would be computed again for every row compared.
CREATE TEMP TABLE source_embeddings AS SELECT id, clip_embed_image(image) AS embedding FROM load_sources;
SELECT count(*) AS rows_with_wrong_embedding FROM load_photos p JOIN source_embeddings s ON s.id = p.source_id
WHERE p.embedding <> s.embedding;
SET enable_seqscan = off;
SELECT count(*) FILTER (WHERE NOT found) AS images_not_found FROM (
    SELECT (SELECT p.source_id FROM load_photos p ORDER BY p.embedding <=> s.embedding LIMIT 1) = s.id AS found
    FROM source_embeddings s) t;
RESET enable_seqscan;
SELECT pg_postmaster_start_time() = :'started'::timestamptz AS postmaster_never_restarted;
SQL
crashes=$(tail -c +$((log_start + 1)) "$PGDATA/server.log" | grep -c "terminated by signal" || true)
log "failed transactions: ${failed:-0}; backend crashes in the server log: $crashes"
log "weights: $(psql_demo -At -c "SELECT clip_info()->'weight_sharing'")"
# The last sample in which all the pgbench backends were alive: the end of the load.
last=$(awk -v n="$clients" '$2 == "load" {count[$1]++} END {for (s in count) if (count[s] == n && s + 0 > last) last = s + 0; print last + 0}' "$mem_log")
if ((last == 0)); then
  log "memory: no sample found all $clients pgbench backends alive"
else
  log "memory at the end of the load (the last sample with all $clients alive), from /proc/PID/smaps_rollup:"
  awk -v last="$last" '
    $2 == "load" && $5 > peak[$3] {peak[$3] = $5}
    $1 == last {total += $4; if ($2 == "load") {n++; pss += $4; if ($5 > max) max = $5
      line[$3] = sprintf("  backend %s: private %.0f MB, Anonymous %.0f MB, PSS %.0f MB", $3, $5 / 1024, $6 / 1024, $4 / 1024)}}
    END {
      for (p in line) printf "%s (its peak during the load: %.0f MB private)\n", line[p], peak[p] / 1024 | "sort"
      close("sort")
      printf "  sum of PSS: %.0f MB over the %d pgbench backends, %.0f MB over all processes of the cluster\n", pss / 1024, n, total / 1024
      printf "  largest private memory of a pgbench backend at the end: %.0f MB (goal: below 100 MB)\n", max / 1024
    }' "$mem_log"
fi
