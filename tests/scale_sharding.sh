#!/usr/bin/env bash
# Sharding with declarative partitioning and postgres_fdw. Starts a coordinator ('scale-coordinator', port 55542) and
# three shards ('scale-shard1' to 'scale-shard3', ports 55543-55545), each with the extension and the tiny fixture
# model. Each shard has the table of examples/sharding/shard.sql (its own embedding trigger and HNSW index); the
# coordinator's table is partitioned by range of id into foreign tables on the shards, and shard 3 (ids from 2001 on)
# holds no rows. 2000 rows inserted through the coordinator are embedded on the shards. For 50 queries,
# clip_sharded_search (examples/sharding/clip_sharded_search.sql) must return exactly the top 10 of an exact search on
# one node holding all 2000 rows (a local table on the coordinator, embedded there), and EXPLAIN VERBOSE must show
# ORDER BY <=> ... LIMIT sent to every shard. Then with shard 2 stopped, a search must fail with a clear error, and
# with allow_partial => true return shard 1's top 10 with a warning.
# All four clusters are made afresh and stopped on exit. Run by scripts/test.sh; as root the servers run as 'postgres'.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
clusters=(scale-coordinator scale-shard1 scale-shard2 scale-shard3)
coordinator() { scripts/cluster.sh psql scale-coordinator -d clip_sharding "$@"; }
stop_all() { local c; for c in "${clusters[@]}"; do scripts/cluster.sh stop "$c"; done; }
trap stop_all EXIT
out="$ROOT/target/scale_sharding"
rm -rf "$out" && mkdir -p "$out"

stop_all
for c in "${clusters[@]}"; do
  rm -rf "$(cluster_env "$c" && echo "$PGDATA")"
  scripts/cluster.sh start "$c"
  scripts/cluster.sh psql "$c" -c "LOAD 'clip_search'" \
    -c "ALTER SYSTEM SET clip.model_dir = '$ROOT/tests/fixtures/tiny-model'" -c "SELECT pg_reload_conf()" \
    -c "CREATE DATABASE $([[ $c == scale-coordinator ]] && echo clip_sharding || echo clip_shard)" >/dev/null
done
for shard in 1 2 3; do
  scripts/cluster.sh psql "scale-shard$shard" -d clip_shard -v dim=32 -c "SET client_min_messages = warning" \
    -f examples/sharding/shard.sql >/dev/null
done

# The coordinator: one foreign server per shard. extensions 'vector' lets postgres_fdw send <=> to the shard;
# async_capable lets the shards work at the same time; batch_size batches the inserts (both from PostgreSQL 14 on;
# 13 inserts row by row). The shards' sessions get
# enable_seqscan = off, so that their HNSW index answers (not a sequential scan of so few rows), and
# hnsw.ef_search = 1000, at least a shard's 1000 rows, which makes an HNSW search visit every row: exact.
fdw_options=""
((PG_MAJOR >= 14)) && fdw_options="async_capable 'true', batch_size '100', "
coordinator -v ON_ERROR_STOP=1 <<SQL
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
CREATE EXTENSION postgres_fdw;
$(for shard in 1 2 3; do
  port=$((55542 + shard))
  echo "CREATE SERVER shard$shard FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '/tmp/clip_search-$port', port '$port',
    dbname 'clip_shard', extensions 'vector', ${fdw_options}options '-c hnsw.ef_search=1000 -c enable_seqscan=off');"
  echo "CREATE USER MAPPING FOR CURRENT_USER SERVER shard$shard OPTIONS (user 'postgres');"
done)
CREATE TABLE notes (id bigint NOT NULL, body text NOT NULL, embedding vector(32)) PARTITION BY RANGE (id);
CREATE FOREIGN TABLE notes_shard1 PARTITION OF notes FOR VALUES FROM (MINVALUE) TO (1001)
    SERVER shard1 OPTIONS (table_name 'notes');
CREATE FOREIGN TABLE notes_shard2 PARTITION OF notes FOR VALUES FROM (1001) TO (2001)
    SERVER shard2 OPTIONS (table_name 'notes');
CREATE FOREIGN TABLE notes_shard3 PARTITION OF notes FOR VALUES FROM (2001) TO (MAXVALUE)
    SERVER shard3 OPTIONS (table_name 'notes');
\i examples/sharding/clip_sharded_search.sql

-- The single node's copy of the same rows, embedded on the coordinator, without an index: exact search.
CREATE TABLE notes_single (id bigint PRIMARY KEY, body text NOT NULL, embedding vector(32));
CREATE TRIGGER notes_single_embed BEFORE INSERT ON notes_single
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('body', 'embedding');

-- 2000 distinct texts; the embedding is left NULL here and computed by the shard that stores the row.
CREATE TEMP TABLE texts AS
SELECT i + 1 AS id,
       format('%s %s %s %s',
              (ARRAY['a', 'the', 'one', 'some'])[1 + i % 4],
              (ARRAY['red', 'small', 'old', 'shiny', 'wet', 'striped', 'wooden', 'happy', 'broken', 'giant'])[1 + i / 4 % 10],
              (ARRAY['cat', 'car', 'boat', 'house', 'dog', 'tree', 'bicycle', 'lamp', 'horse', 'rocket'])[1 + i / 40 % 10],
              (ARRAY['in the snow', 'at night', 'on a beach', 'in a city', 'under a bridge'])[1 + i / 400]) AS body
FROM generate_series(0, 1999) i;
INSERT INTO notes (id, body) SELECT id, body FROM texts;
INSERT INTO notes_single (id, body) SELECT id, body FROM texts;
SQL

coordinator -At -F ' ' >"$out/counts.txt" <<'SQL'
SELECT 'shard1', count(*), count(embedding) FROM notes_shard1;
SELECT 'shard2', count(*), count(embedding) FROM notes_shard2;
SELECT 'shard3', count(*), count(embedding) FROM notes_shard3;
SQL
cat "$out/counts.txt"
[[ $(cat "$out/counts.txt") == $'shard1 1000 1000\nshard2 1000 1000\nshard3 0 0' ]] \
  || die "sharding: rows are not spread and embedded as expected"

# The statement the helper runs, as EXPLAIN VERBOSE shows it: each shard gets ORDER BY <=> ... LIMIT 10.
coordinator -At >"$out/explain.txt" <<'SQL'
SELECT format('PREPARE search(vector) AS %s', clip_sharded_search_sql('notes', 10)) \gexec
EXPLAIN (VERBOSE, COSTS OFF) EXECUTE search(clip_embed_text('a red boat'));
SQL
cat "$out/explain.txt"
[[ $(grep -c 'Remote SQL: SELECT id, embedding FROM public.notes ORDER BY (embedding OPERATOR(public.<=>) .*) ASC NULLS LAST LIMIT 10::bigint$' "$out/explain.txt") -eq 3 ]] \
  || die "sharding: the top-10 query is not sent whole to each of the 3 shards"
# PostgreSQL 14 runs a foreign scan asynchronously only when it returns its columns as they are, not this query's
# computed distance and shard name (15 runs those too).
((PG_MAJOR < 15)) || grep -q 'Async Foreign Scan' "$out/explain.txt" ||
  die "sharding: the shards are not queried asynchronously"

# 50 queries: 10 stored texts and 40 others; the sharded top 10 must equal the single node's exact top 10.
coordinator -At -F ' ' >"$out/compare.txt" <<'SQL'
CREATE TEMP TABLE queries AS
SELECT q, clip_embed_text(q) AS v FROM (
    SELECT body AS q FROM notes_single WHERE id % 200 = 7
    UNION ALL
    SELECT format('%s %s', (ARRAY['a photo of', 'a drawing of', 'my', 'two', 'a blurry', 'an'])[1 + i % 6],
                  (ARRAY['cats', 'red cars', 'boats at night', 'a wooden house', 'dogs in the snow', 'trees',
                         'a bicycle under a bridge', 'lamps', 'a horse on a beach', 'rockets in a city'])[1 + i / 6 % 10])
    FROM generate_series(0, 39) i
) s;
SELECT count(*) AS queries,
       count(*) FILTER (WHERE sharded = exact) AS equal,
       count(*) FILTER (WHERE sharded_partitions @> ARRAY['notes_shard1', 'notes_shard2']::regclass[]) AS from_both
FROM (SELECT (SELECT array_agg(s.id ORDER BY s.distance, s.id) FROM clip_sharded_search('notes', v, 10) s) AS sharded,
             (SELECT array_agg(DISTINCT s.partition) FROM clip_sharded_search('notes', v, 10) s) AS sharded_partitions,
             (SELECT array_agg(e.id) FROM (SELECT id FROM notes_single ORDER BY embedding <=> v, id LIMIT 10) e) AS exact
      FROM queries) r;
SQL
read -r queries equal from_both <"$out/compare.txt"
log "sharding: $equal of $queries queries give the exact single-node top 10 ($from_both draw on both shards)"
[[ $queries -eq 50 && $equal -eq 50 ]] || die "sharding: the sharded top 10 differs from the single node's exact top 10"
# The shards' backends report their index scans when they end, after the coordinator's session: a bounded wait.
for shard in 1 2; do
  for ((i = 0; i < 100; i++)); do
    scans=$(scripts/cluster.sh psql "scale-shard$shard" -d clip_shard -At \
      -c "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'notes_hnsw'")
    ((scans >= 50)) && break
    sleep 0.1
  done
  ((scans >= 50)) || die "sharding: shard $shard's HNSW index served $scans searches, not the 50 or more expected"
  log "sharding: shard $shard's HNSW index served $scans searches"
done

# A shard down: an error that says so, not a silently partial answer; a partial answer only when asked for.
scripts/cluster.sh stop scale-shard2
if coordinator -c '\set VERBOSITY verbose' \
     -c "SELECT * FROM clip_sharded_search('notes', clip_embed_text('a red boat'), 10)" >/dev/null 2>"$out/down.err"; then
  die "sharding: a search with a shard down succeeded"
fi
cat "$out/down.err"
grep -q 'ERROR:  08001: clip_sharded_search: a shard of notes cannot be reached: could not connect to server "shard2"' \
  "$out/down.err" \
  || die "sharding: unclear error with a shard down"
coordinator -At -F ' ' >"$out/partial.txt" 2>"$out/partial.err" <<'SQL'
SELECT (SELECT array_agg(id ORDER BY distance, id) FROM clip_sharded_search('notes', clip_embed_text('a red boat'), 10, allow_partial => true))
     = (SELECT array_agg(id) FROM (SELECT id FROM notes_single WHERE id <= 1000 ORDER BY embedding <=> clip_embed_text('a red boat'), id LIMIT 10) e);
SQL
cat "$out/partial.err"
[[ $(cat "$out/partial.txt") == t ]] || die "sharding: the partial answer is not shard 1's and shard 3's top 10"
grep -q 'WARNING:  clip_sharded_search: partial result without notes_shard2' "$out/partial.err" \
  || die "sharding: the partial answer does not warn"
log "sharding: a shard down fails the search; allow_partial => true gives the other shards' top 10 with a warning"
