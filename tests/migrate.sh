#!/usr/bin/env bash
# A migration to another model under load (clip_migrate), on a cluster of its own with the background worker: a
# table of 3000 notes, watched with the model 'tiny', moves to 'siglip2' while two sessions insert and update rows
# and a third searches, with an immediate shutdown in the middle. Then: no committed row is lost, every row has
# both embeddings of its newest text, the searches were answered throughout (but while the server was down), and
# clip_migrations showed the time left; clip_migrate_switch, under the same load, gives the searched column the new
# model; a cancelled migration leaves the table as it was. Every wait is a bounded poll; nothing is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cluster_env migrate
db=clip_migrate
q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
wait_for() { wait_for_sql "$db" "$@"; }
runs=$(mktemp -d)
trap 'touch "$runs/stop"; wait; rm -rf "$runs"; scripts/cluster.sh stop migrate' EXIT
start_preloaded_cluster migrate "$db" "clip.worker_naptime = 100" "clip.batch_size = 8"

q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
SELECT clip_register_model('tiny', '$ROOT/tests/fixtures/tiny-model');
SELECT clip_register_model('siglip2', '$ROOT/tests/fixtures/families/siglip2');
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, embedding vector(32));
CREATE INDEX notes_embedding_hnsw ON notes USING hnsw (embedding vector_cosine_ops);
INSERT INTO notes SELECT i, 'note ' || i || ' about topic ' || (i % 37) FROM generate_series(1, 3000) i;
SELECT clip_watch('notes', 'body', 'embedding', model => 'tiny');
SQL
wait_for "SELECT rows_pending = 0 FROM clip_watch_status WHERE target_column = 'embedding'"

# Writer S inserts a row and updates another in each transaction until told to stop; the ids it inserted and
# committed go to its file (a transaction cut off by the shutdown may have committed without being recorded). Each
# load has ids of its own.
writer() {
  local s=$1 i=0 id
  while [[ ! -e $runs/stop ]]; do
    i=$((i + 1))
    id=$((1000000 * loads + 100000 * s + i))
    if q -c "BEGIN" -c "INSERT INTO notes VALUES ($id, 'inserted by $s as number $i')" \
         -c "UPDATE notes SET body = 'updated by $s at $i' WHERE id = $((RANDOM % 3000 + 1))" -c "COMMIT" \
         2>/dev/null; then
      echo "$id" >>"$runs/inserted"
    fi
  done
}
# The searcher asks for the 5 nearest notes, in the model of the column it searches, until told to stop; each
# answer is "ok", or "failed" unless the server was down (the file 'down' exists) when it started or ended.
searcher() {
  local answer down
  while [[ ! -e $runs/stop ]]; do
    [[ -e $runs/down ]] && down=1 || down=0
    answer=$(q -c "SELECT count(*) FROM (SELECT id FROM notes ORDER BY embedding <=>
                   clip_embed_text('a note about topic 5', clip_column_model('notes', 'embedding')) LIMIT 5) s" \
             2>/dev/null) || answer=error
    [[ -e $runs/down ]] && down=1
    if [[ $answer == 5 ]]; then echo ok; elif ((down == 0)); then echo "failed: $answer"; fi
  done >>"$runs/searches"
}
loads=0
load() {
  loads=$((loads + 1))
  rm -f "$runs/stop"
  writer 1 &
  writer 2 &
  searcher &
}
unload() {
  touch "$runs/stop"
  wait
}
searches() { grep -c "$1" "$runs/searches" || true; }

log "migrate: 3000 rows from tiny to siglip2 under inserts, updates and searches; an immediate shutdown"
q -c "SELECT clip_migrate('notes', 'body', 'embedding', 'siglip2')" >/dev/null
load
for ((i = 0; i < 600; i++)); do
  [[ $(q -c "SELECT rows_embedded > 0 AND rows_pending > 0 FROM clip_migrations") == t ]] && break
  sleep 0.1
done
[[ $(q -c "SELECT time_left IS NOT NULL AND time_left > '0' FROM clip_migrations") == t ]] \
  || die "migrate: clip_migrations shows no time left in the middle of the migration"
touch "$runs/down"
as_owner "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null
scripts/cluster.sh start migrate
wait_until 60 sql_is_true "$db" "SELECT true" || die "migrate: the server did not come back"
rm -f "$runs/down"
progress=$(q -c "SELECT rows_embedded || ' embedded, ' || rows_pending || ' pending' FROM clip_migrations")
log "migrate: restarted with $progress"
[[ $progress != "0 embedded, "* ]] || die "migrate: the shutdown was not in the middle of the migration"
# The worker catches up with the writers, then they stop and every watch settles.
wait_for "SELECT rows_pending < 100 FROM clip_migrations" 300
unload
wait_for "SELECT bool_and(rows_pending = 0) FROM clip_watch_status"
q <<SQL
\pset footer off
CREATE TEMP TABLE inserted (id int);
\copy inserted FROM '$runs/inserted'
SELECT count(*) AS committed, count(*) FILTER (WHERE NOT EXISTS (SELECT FROM notes n WHERE n.id = i.id)) AS lost
FROM inserted i \gset
SELECT count(*) AS rows,
       count(*) FILTER (WHERE embedding IS NULL OR (embedding <=> clip_embed_text(body, model => 'tiny')) > 1e-6)
           AS wrong_old,
       count(*) FILTER (WHERE embedding_next IS NULL
                           OR (embedding_next <=> clip_embed_text(body, model => 'siglip2')) > 1e-6) AS wrong_new,
       count(*) FILTER (WHERE body LIKE 'updated%') AS updated
FROM notes \gset
\echo rows :rows (:committed inserted and committed, :updated updated), lost :lost, wrong old embeddings :wrong_old, wrong new embeddings :wrong_new
SELECT :lost = 0 AND :wrong_old = 0 AND :wrong_new = 0 AND :committed > 0 AND :updated > 0 AS ok \gset
\if :ok
\else
  SELECT 1 / 0;
\endif
SQL
[[ $(searches failed) == 0 ]] || die "migrate: searches failed: $(grep failed "$runs/searches" | sort | uniq -c)"
log "migrate: $(searches ok) searches answered, none failed"

log "migrate: the switch, under the same load"
: >"$runs/searches"
load
wait_until 120 q -c "SELECT clip_migrate_switch('notes')" 2>/dev/null || die "migrate: the switch never succeeded"
# Some rows written after the switch, too.
at_switch=$(wc -l <"$runs/inserted")
more_rows_written() { (($(wc -l <"$runs/inserted") >= at_switch + 20)); }
wait_until 60 more_rows_written || die "migrate: the writers stopped after the switch"
unload
wait_for "SELECT bool_and(rows_pending = 0) FROM clip_watch_status"
[[ $(q -c "SELECT clip_column_model('notes', 'embedding') = 'siglip2' AND NOT EXISTS (TABLE clip_migrations)
           AND (SELECT string_agg(target_column || ' ' || model, ', ') FROM clip_watch_status) = 'embedding siglip2'
           AND NOT EXISTS (SELECT FROM notes WHERE embedding IS NULL
                           OR (embedding <=> clip_embed_text(body, model => 'siglip2')) > 1e-6)") == t ]] \
  || die "migrate: after the switch, the column does not hold the new model's embeddings of every row"
q -c "CREATE TEMP TABLE inserted (id int)" -c "\\copy inserted FROM '$runs/inserted'" \
  -c "SELECT count(*) FROM inserted i WHERE NOT EXISTS (SELECT FROM notes n WHERE n.id = i.id)" | grep -qx 0 \
  || die "migrate: rows committed during the switch were lost"
[[ $(searches failed) == 0 ]] || die "migrate: searches failed around the switch: $(grep failed "$runs/searches" | sort | uniq -c)"
log "migrate: switched; $(searches ok) searches answered meanwhile, none failed"

log "migrate: a cancelled migration leaves the table as it was"
shape="SELECT concat_ws(' | ',
  (SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute
   WHERE attrelid = 'notes'::regclass AND attnum > 0 AND NOT attisdropped),
  (SELECT string_agg(pg_get_indexdef(indexrelid), ', ' ORDER BY indexrelid::regclass::text) FROM pg_index
   WHERE indrelid = 'notes'::regclass),
  (SELECT string_agg(tgname, ', ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'notes'::regclass),
  (SELECT string_agg(target_column || ' ' || model, ', ') FROM clip_watch_status))"
before=$(q -c "$shape")
q -c "SELECT clip_migrate('notes', 'body', 'embedding', 'tiny')" >/dev/null
wait_for "SELECT rows_embedded > 0 FROM clip_migrations"
q -c "SELECT clip_migrate_cancel('notes')" >/dev/null
[[ $(q -c "$shape") == "$before" ]] || die "migrate: the cancel left the table changed: $(q -c "$shape")"
log "migrate: ok"
