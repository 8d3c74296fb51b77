#!/usr/bin/env bash
# Read scaling with a hot standby. Starts a primary (cluster 'scale-primary', port 55540) with the extension and the
# tiny fixture model, makes a streaming standby of it with pg_basebackup -R ('scale-standby', port 55541), creates a
# table with the embedding trigger and an HNSW index on the primary and inserts rows there (embedded by the trigger);
# waits, bounded, until the standby has replayed the primary's WAL up to the insert; then runs 20 searches (16 texts,
# 4 images) on both in read-only transactions and requires the standby's top 10 to equal the primary's, the index to
# serve the standby's search, and the rows searched for by their own caption to come first on the standby.
# Both clusters are made afresh and stopped on exit. Run by scripts/test.sh; as root the servers run as 'postgres'.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
data_dir() { (cluster_env "$1" && echo "$PGDATA"); }
primary() { scripts/cluster.sh psql scale-primary -d clip_replica "$@"; }
standby() { scripts/cluster.sh psql scale-standby -d clip_replica "$@"; }
stop_both() { scripts/cluster.sh stop scale-standby; scripts/cluster.sh stop scale-primary; }
trap stop_both EXIT
out="$ROOT/target/scale_replica"
rm -rf "$out" && mkdir -p "$out"

stop_both
rm -rf "$(data_dir scale-primary)" "$(data_dir scale-standby)"
scripts/cluster.sh start scale-primary
# ALTER SYSTEM writes postgresql.auto.conf, which pg_basebackup copies: the standby gets the same model.
scripts/cluster.sh psql scale-primary -c "LOAD 'clip_search'" \
  -c "ALTER SYSTEM SET clip.model_dir = '$ROOT/tests/fixtures/tiny-model'" -c "SELECT pg_reload_conf()" >/dev/null

# The standby, made before any table exists: the database, the extension, the table, the index and the rows all
# reach it by streaming replication. -R writes standby.signal and primary_conninfo.
standby_data=$(data_dir scale-standby)
primary_socket=$(cluster_env scale-primary && echo "$PGSOCKET")
mkdir -m 0700 "$standby_data" && { [[ $(id -u) -ne 0 ]] || chown postgres:postgres "$standby_data"; }
as_owner "$PG_BIN/pg_basebackup" -h "$primary_socket" -p 55540 -U postgres -D "$standby_data" -R -X stream -c fast
cat >>"$standby_data/postgresql.conf" <<CONF
# The standby's own address (the lines above are the primary's, copied by pg_basebackup).
port = 55541
unix_socket_directories = '$(cluster_env scale-standby && echo "$PGSOCKET")'
CONF
scripts/cluster.sh start scale-standby

scripts/cluster.sh psql scale-primary -c "CREATE DATABASE clip_replica" >/dev/null
primary <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
CREATE TABLE captions (id bigserial PRIMARY KEY, caption text NOT NULL, embedding vector(32));
CREATE TRIGGER captions_embed BEFORE INSERT OR UPDATE OF caption ON captions
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('caption', 'embedding');
CREATE INDEX captions_hnsw ON captions USING hnsw (embedding vector_cosine_ops);
-- 500 distinct captions; ids 1..500 in insertion order.
INSERT INTO captions (caption)
SELECT format('a %s %s %s',
              (ARRAY['red', 'small', 'old', 'shiny', 'wet', 'striped', 'wooden', 'happy', 'broken', 'giant'])[1 + i % 10],
              (ARRAY['cat', 'car', 'boat', 'house', 'dog', 'tree', 'bicycle', 'lamp', 'horse', 'rocket'])[1 + i / 10 % 10],
              (ARRAY['in the snow', 'at night', 'on a beach', 'in a city', 'under a bridge'])[1 + i / 100])
FROM generate_series(0, 499) i ORDER BY i;
SQL
insert_lsn=$(primary -At -c "SELECT pg_current_wal_insert_lsn()")

# Bounded wait (60 s) for the standby to replay the primary's WAL up to the insert.
replayed=f
for ((i = 0; i < 600; i++)); do
  replayed=$(standby -At -c "SELECT coalesce(pg_last_wal_replay_lsn() >= '$insert_lsn'::pg_lsn, false)" 2>/dev/null || echo f)
  [[ $replayed == t ]] && break
  sleep 0.1
done
[[ $replayed == t ]] || die "hot standby: the standby did not replay up to $insert_lsn within 60 s"
[[ $(standby -At -c "SELECT pg_is_in_recovery()") == t ]] || die "hot standby: scale-standby is not in recovery"

# 20 searches: 10 by a stored row's own caption (that row must come first), 6 free texts, 4 images (read by the
# server from the fixtures), each in a read-only transaction through the HNSW index.
searches="$out/searches.sql"
{
  echo "BEGIN TRANSACTION READ ONLY;"
  echo "SET LOCAL enable_seqscan = off;"
  for id in 1 37 74 111 148 222 296 333 407 500; do
    echo "SELECT 'row $id', array_agg(id) FROM (SELECT id FROM captions ORDER BY embedding <=> clip_embed_text((SELECT caption FROM captions WHERE id = $id)) LIMIT 10) s;"
  done
  for q in 'a cat' 'a red car at night' 'boats on a beach' 'a giant horse' 'lamps in the city' 'snow'; do
    echo "SELECT '$q', array_agg(id) FROM (SELECT id FROM captions ORDER BY embedding <=> clip_embed_text('$q') LIMIT 10) s;"
  done
  for f in chelsea_rgb_451x300.jpg camera_l_320x320.jpg coffee_lossy_300x200.webp rocket_p4bit_alpha_213x320.png; do
    echo "SELECT '$f', array_agg(id) FROM (SELECT id FROM captions ORDER BY embedding <=> clip_embed_image(pg_read_binary_file('$ROOT/tests/fixtures/images/$f')) LIMIT 10) s;"
  done
  echo "COMMIT;"
} >"$searches"
primary -At -F ' ' -f "$searches" >"$out/primary.txt"
standby -At -F ' ' -f "$searches" >"$out/standby.txt"
[[ $(wc -l <"$out/standby.txt") -eq 20 ]] || die "hot standby: expected 20 results, got: $(cat "$out/standby.txt")"
if ! diff -u "$out/primary.txt" "$out/standby.txt"; then
  die "hot standby: the standby's top 10 differs from the primary's"
fi
for id in 1 37 74 111 148 222 296 333 407 500; do
  grep -q "^row $id {$id[,}]" "$out/standby.txt" || die "hot standby: row $id is not first when searched by its caption"
done

# The standby's plan: the HNSW index, which arrived by WAL.
standby -c "BEGIN TRANSACTION READ ONLY" -c "SET LOCAL enable_seqscan = off" \
  -c "EXPLAIN (COSTS OFF) SELECT id FROM captions ORDER BY embedding <=> clip_embed_text('a cat') LIMIT 10" \
  -c "COMMIT" | tee "$out/standby_plan.txt"
grep -q 'Index Scan using captions_hnsw' "$out/standby_plan.txt" || die "hot standby: the search does not use the index"
# And a write on the standby is refused: this is a read replica.
if standby -c "INSERT INTO captions (caption) VALUES ('x')" 2>"$out/write.err"; then
  die "hot standby: the standby accepted a write"
fi
grep -q 'read-only transaction' "$out/write.err" || die "hot standby: unexpected error on write: $(cat "$out/write.err")"
log "hot standby: 20 searches (16 texts, 4 images) give the same top 10 on the standby as on the primary"
