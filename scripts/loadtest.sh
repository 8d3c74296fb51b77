#!/usr/bin/env bash
# Load test: 8 concurrent sessions (pgbench) mix inserts through the embedding trigger, text searches and image
# searches on the demo cluster's model for a bounded time, then checks: zero errors, no crashed backend, every
# inserted row stored with its embedding and found by a search for its own image; and reports each backend's
# peak RSS. Sets up like the demo (prepare_demo in scripts/lib.sh).
#   scripts/loadtest.sh [SECONDS]     default 60
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
seconds=${1:-60}
clients=8
export CARGO_BUILD_JOBS=2
prepare_demo
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

# Peak RSS of each pgbench backend, sampled every second while the load runs.
rss_log="$DEPS/loadtest-rss.txt"; : >"$rss_log"
(
  while sleep 1; do
    for pid in $(psql_demo -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'" 2>/dev/null); do
      awk -v pid="$pid" '/VmHWM/ {print pid, $2}' "/proc/$pid/status" 2>/dev/null || true
    done >>"$rss_log"
  done
) &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT

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
-- Every row holds its own image's embedding, and an index search for each image finds a row of it.
SELECT count(*) AS rows_with_wrong_embedding FROM load_photos p
WHERE p.embedding <> (SELECT clip_embed_image(image) FROM load_sources s WHERE s.id = p.source_id);
SELECT count(*) FILTER (WHERE NOT found) AS images_not_found FROM (
    SELECT (SELECT p.source_id FROM load_photos p ORDER BY p.embedding <=> q.embedding LIMIT 1) = s.id AS found
    FROM load_sources s, LATERAL (SELECT clip_embed_image(s.image) AS embedding) q) t;
SELECT pg_postmaster_start_time() = :'started'::timestamptz AS postmaster_never_restarted;
SQL
crashes=$(grep -c "terminated by signal" "$PGDATA/server.log" || true)
log "failed transactions: ${failed:-0}; backend crashes in the server log: $crashes"
log "peak RSS per pgbench backend (kB):"
sort -k1,1n -k2,2n "$rss_log" | awk '{peak[$1] = $2} END {for (p in peak) print "  backend " p ": " peak[p] " kB"}' | sort
