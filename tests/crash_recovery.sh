#!/usr/bin/env bash
# Crash safety of data: rows are inserted (embedded by the trigger, indexed by HNSW) while the server is stopped
# with `pg_ctl stop -m immediate`; after the restart every row whose commit was acknowledged is there, and the
# HNSW index returns what an exact scan returns. Run by scripts/test.sh on the private 'test' cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cluster_env test
psql_test() { scripts/cluster.sh psql test -d clip_crash -v ON_ERROR_STOP=1 "$@"; }

scripts/cluster.sh psql test -c "DROP DATABASE IF EXISTS clip_crash" -c "CREATE DATABASE clip_crash" >/dev/null
psql_test <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, embedding vector(32));
CREATE TRIGGER notes_embed BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('body', 'embedding');
CREATE INDEX notes_hnsw ON notes USING hnsw (embedding vector_cosine_ops);
SQL

acknowledged="$DEPS/crash-acknowledged.txt" writer_errors="$DEPS/crash-writer-errors.txt"
: >"$acknowledged"
# One INSERT per transaction; an id is written only after psql got the server's acknowledgement of its commit.
# The writer stops at its first error, which must be the lost connection.
(
  for i in $(seq 1 100000); do
    echo "INSERT INTO notes VALUES ($i, 'note number $i about topic $((i % 97))') RETURNING id;"
  done | psql_test -At 2>"$writer_errors" >>"$acknowledged"
) &
writer=$!
# Stop only once enough commits are acknowledged for the check to mean something (bounded: 60 s).
for ((i = 0; i < 600; i++)); do
  (($(grep -c '^[0-9]' "$acknowledged" || true) >= 200)) && break
  kill -0 $writer 2>/dev/null || break
  sleep 0.1
done
as_owner "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null
wait $writer || true
committed=$(grep -c '^[0-9]' "$acknowledged" || true)
scripts/cluster.sh start test
if ((committed < 200)); then
  cat "$writer_errors" >&2
  die "crash recovery: only $committed commits were acknowledged before the stop (at least 200 needed)"
fi
if grep -v -q -i -E 'closed the connection|terminat|connection to server|processing the request|postmaster has commanded|reconnect to the database|^\s*$' "$writer_errors"; then
  cat "$writer_errors" >&2
  die "crash recovery: the writer failed for another reason than the stop"
fi

psql_test -v ids="$(grep '^[0-9]' "$acknowledged" | paste -sd, -)" <<'SQL'
\pset footer off
SET hnsw.ef_search = 400;
SET enable_seqscan = off;
WITH checks AS (
    SELECT
        (SELECT count(*) FROM unnest(string_to_array(:'ids', ',')::int[]) AS ack(id)
         WHERE NOT EXISTS (SELECT 1 FROM notes n WHERE n.id = ack.id)) AS acknowledged_but_missing,
        (SELECT count(*) FROM notes WHERE embedding IS NULL) AS rows_without_embedding,
        -- For 20 queries, the index's top 10 is the exact top 10.
        (SELECT count(*) FILTER (WHERE index_ids <> exact_ids) FROM (
            SELECT (SELECT array_agg(id) FROM (SELECT id FROM notes ORDER BY embedding <=> q.v LIMIT 10) a) AS index_ids,
                   (SELECT array_agg(id) FROM (SELECT id FROM notes ORDER BY (embedding <=> q.v) + 0, id LIMIT 10) b) AS exact_ids
            FROM (SELECT clip_embed_text('note about topic ' || t) AS v FROM generate_series(1, 20) t) q) r
        ) AS queries_where_index_differs,
        (SELECT count(*) FROM notes) AS rows_after_restart
)
SELECT *, acknowledged_but_missing = 0 AND rows_without_embedding = 0 AND queries_where_index_differs = 0 AS ok
FROM checks \gset
\echo rows after restart :rows_after_restart, acknowledged but missing :acknowledged_but_missing, without embedding :rows_without_embedding, queries where the index differs :queries_where_index_differs
\if :ok
\else
    \echo crash recovery check FAILED
    SELECT 1 / 0;  -- psql exits non-zero under ON_ERROR_STOP
\endif
SQL
log "crash recovery: $committed commits acknowledged before the immediate stop"
