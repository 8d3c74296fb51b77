#!/usr/bin/env bash
# The background worker (clip_watch): on a cluster of its own with shared_preload_libraries = 'clip_search', rows
# inserted by several sessions are embedded by the worker, as clip_embed_* embeds them; rows that existed before the
# watch too; an update while a row waits ends with its newest source's embedding; a corrupt image is recorded in
# clip_backfill_failures and the other rows are embedded; an immediate shutdown in the middle of the work loses
# nothing and embeds nothing twice; a partitioned table works; clip_unwatch stops the work; pg_terminate_backend
# stops the worker, which the launcher starts again; a database of clip.worker_databases that does not exist is
# reported once and served once it is created; a table owner's trigger cannot use the worker's rights or
# leave it a setting, and an error it raises past the batch function is recorded and stops no other watch; a hot
# standby of the cluster runs no worker; two workers for one database share its rows, each row embedded once. Every
# wait is a bounded poll, but for one pause that gives a repeated warning time to appear; nothing is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cluster_env watch
db=clip_watch
q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
wait_for() { wait_for_sql "$db" "$@"; }

trap 'scripts/cluster.sh stop watch; scripts/cluster.sh stop watch-standby' EXIT
# The second database is where a role plants shadowing objects (below).
hostile_db=clip_hostile
start_preloaded_cluster watch "$db, $hostile_db" "clip.worker_naptime = 200" "clip.batch_size = 4"
q -c "CREATE ROLE clip_hostile_owner LOGIN" -c "ALTER DATABASE $hostile_db OWNER TO clip_hostile_owner"

q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, embedding vector(32));
-- How often the worker wrote each row's embedding: once, unless the test changed the row's source.
CREATE TABLE writes (id int PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
  INSERT INTO writes VALUES (NEW.id, 1) ON CONFLICT (id) DO UPDATE SET n = writes.n + 1;
  RETURN NEW;
END \$\$;
CREATE TRIGGER count_write AFTER UPDATE OF embedding ON notes FOR EACH ROW
  WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION count_write();
-- Rows that exist before the watch.
INSERT INTO notes SELECT i, 'an older note number ' || i FROM generate_series(1, 100) i;
SELECT clip_watch('notes', 'body', 'embedding');
SQL

log "watch: 2000 rows from 4 sessions, an immediate shutdown in the middle"
for s in 0 1 2 3; do
  (for i in $(seq $((1000 + s * 500)) $((1000 + s * 500 + 499))); do
     echo "INSERT INTO notes VALUES ($i, 'note number $i about topic $((i % 37))');"
   done | q) &
done
wait
# Stop as soon as the worker has committed some of the work, not all of it (in batches of 4 it takes seconds).
for ((i = 0; i < 600; i++)); do
  embedded=$(q -c "SELECT count(embedding) FROM notes")
  ((embedded > 0)) && break
  sleep 0.1
done
as_owner "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null
((embedded > 0 && embedded < 2100)) || die "watch: $embedded of 2100 rows embedded at the stop: not in the middle of the work"
log "watch: stopped with $embedded of 2100 rows embedded"
scripts/cluster.sh start watch
wait_for "SELECT rows_pending = 0 FROM clip_watch_status WHERE relation = 'notes'::regclass"
q <<'SQL'
\pset footer off
SELECT count(*) = 2100 AS all_rows, count(embedding) = 2100 AS all_embedded,
       bool_and((embedding <=> clip_embed_text(body)) < 1e-6) AS each_its_own_embedding
FROM notes \gset
SELECT max(n) AS most_writes, count(*) AS rows_written FROM writes \gset
\echo rows 2100: :all_rows, embedded: :all_embedded, each its own: :each_its_own_embedding, written: :rows_written, at most :most_writes times each
SELECT :'all_rows' AND :'all_embedded' AND :'each_its_own_embedding' AND :most_writes = 1 AND :rows_written = 2100 AS ok \gset
\if :ok
\else
  SELECT 1 / 0;
\endif
SQL

log "watch: an update while the row waits, a corrupt image, a partitioned table"
q <<SQL
-- Updated right after the insert: whenever the worker took the row, it ends with the new source's embedding.
INSERT INTO notes SELECT i, 'first words ' || i FROM generate_series(5001, 5050) i;
UPDATE notes SET body = 'second words ' || id WHERE id > 5000;
CREATE TABLE photos (id int PRIMARY KEY, image bytea NOT NULL, embedding vector(32));
SELECT clip_watch('photos', 'image', 'embedding');
INSERT INTO photos SELECT i, pg_read_binary_file('$ROOT/tests/fixtures/images/' || name)
FROM unnest(ARRAY['chelsea_rgb_200x133.png', 'coffee_lossy_300x200.webp', 'camera_l_128x128.gif',
                  'rocket_rgb_progressive_640x427.jpg']) WITH ORDINALITY AS f(name, i);
INSERT INTO photos VALUES (99, '\x89504e470d0a1a0a0000'::bytea);
CREATE TABLE parted (id int PRIMARY KEY, body text, embedding vector(32)) PARTITION BY HASH (id);
CREATE TABLE parted_0 PARTITION OF parted FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES WITH (MODULUS 3, REMAINDER 2);
SELECT clip_watch('parted', 'body', 'embedding');
INSERT INTO parted SELECT i, 'partitioned note ' || i FROM generate_series(1, 300) i;
SQL
wait_for "SELECT bool_and(rows_pending = 0) FROM clip_watch_status"
q <<'SQL'
\pset footer off
SELECT bool_and(body LIKE 'second words %' AND (embedding <=> clip_embed_text(body)) < 1e-6) AS newest_source
FROM notes WHERE id > 5000 \gset
SELECT count(embedding) = 4 AND bool_and(embedding IS NOT NULL OR id = 99) AS good_photos_embedded FROM photos \gset
SELECT count(*) = 1 AND bool_and(row_key = '{"id": 99}' AND sqlstate = '22P03') AS corrupt_recorded
FROM clip_backfill_failures WHERE relation = 'photos'::regclass \gset
SELECT count(embedding) = 300 AND bool_and((embedding <=> clip_embed_text(body)) < 1e-6) AS partitioned_embedded
FROM parted \gset
SELECT rows_failed = 1 AND worker_state <> 'not running' AND time_left = interval '0' AS status_shows_it
FROM clip_watch_status WHERE relation = 'photos'::regclass \gset
\echo newest source: :newest_source, good photos: :good_photos_embedded, corrupt recorded: :corrupt_recorded, partitioned: :partitioned_embedded, status: :status_shows_it
SELECT :'newest_source' AND :'good_photos_embedded' AND :'corrupt_recorded' AND :'partitioned_embedded' AND :'status_shows_it' AS ok \gset
\if :ok
\else
  SELECT 1 / 0;
\endif
SQL

log "watch: a fixed image is embedded again; clip_unwatch stops the work"
q -c "UPDATE photos SET image = (SELECT image FROM photos WHERE id = 1) WHERE id = 99"
q -c "SELECT clip_unwatch('parted')"
q -c "INSERT INTO parted SELECT i, 'not watched ' || i FROM generate_series(301, 320) i"
# A row of a watched table inserted after those: once it is embedded, the worker has had a round since.
q -c "INSERT INTO notes VALUES (9001, 'a marker note')"
wait_for "SELECT embedding IS NOT NULL FROM notes WHERE id = 9001"
wait_for "SELECT embedding IS NOT NULL FROM photos WHERE id = 99"
wait_for "SELECT count(*) = 0 FROM clip_backfill_failures WHERE relation = 'photos'::regclass" 30
[[ "$(q -c "SELECT count(embedding) FROM parted WHERE id > 300")" == 0 ]] || die "watch: an unwatched table was embedded"
[[ "$(q -c "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'clip\_watch%' AND tgrelid = 'parted'::regclass")" == 0 ]] \
  || die "watch: clip_unwatch left its trigger"

log "watch: an owner's trigger runs with the owner's rights only; an owner whose name needs quotes"
q <<'SQL'
SET client_min_messages = warning;
CREATE ROLE "Mallory Owner" LOGIN;
GRANT CREATE ON SCHEMA public TO "Mallory Owner";
SET ROLE "Mallory Owner";
CREATE TABLE escalate (id int PRIMARY KEY, body text, embedding vector(32));
-- What the owner's trigger saw and could do each time the worker embedded one of its rows.
CREATE TABLE attempts (id int, who text, left_setting text, became_superuser boolean, error text);
CREATE FUNCTION try_escalate() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  seen text := current_setting('clip_test.left_behind', true);
BEGIN
  BEGIN
    RESET ROLE;
    EXECUTE 'ALTER ROLE "Mallory Owner" SUPERUSER';
    INSERT INTO attempts VALUES (NEW.id, current_user, seen, true, NULL);
  EXCEPTION WHEN OTHERS THEN
    INSERT INTO attempts VALUES (NEW.id, current_user, seen, false, SQLERRM);
  END;
  -- A session-wide setting that the worker's next batches must not inherit.
  PERFORM set_config('clip_test.left_behind', 'yes', false);
  RETURN NEW;
END $$;
CREATE TRIGGER try_escalate BEFORE UPDATE OF embedding ON escalate FOR EACH ROW EXECUTE FUNCTION try_escalate();
SELECT clip_watch('escalate', 'body', 'embedding');
INSERT INTO escalate VALUES (1, 'the first row of the owner');
RESET ROLE;
SQL
wait_for "SELECT embedding IS NOT NULL FROM escalate WHERE id = 1"
q -c "INSERT INTO escalate VALUES (2, 'the second row of the owner')"
wait_for "SELECT embedding IS NOT NULL FROM escalate WHERE id = 2"
[[ "$(q -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'Mallory Owner'")" == f ]] \
  || die "watch: a table owner's trigger made its owner a superuser through the worker"
[[ "$(q -c "SELECT count(*) = 2 AND bool_and(who = 'Mallory Owner' AND NOT became_superuser AND coalesce(left_setting, '') = '')
            FROM attempts")" == t ]] || { q -c "TABLE attempts" >&2; die "watch: the owner's trigger ran with other rights or settings"; }

log "watch: an error that escapes one watch's batch is recorded there and stops nothing else"
pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'clip_search worker' AND datname = current_database()")
q <<'SQL'
SET client_min_messages = warning;
SET ROLE "Mallory Owner";
CREATE TABLE poison (id int PRIMARY KEY, body text, embedding vector(32));
-- PL/pgSQL's WHEN OTHERS does not catch a cancel: this leaves the batch function.
CREATE FUNCTION cancel_everything() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'a trigger of the owner cancels' USING ERRCODE = 'query_canceled';
END $$;
CREATE TRIGGER cancel_everything BEFORE UPDATE OF embedding ON poison FOR EACH ROW EXECUTE FUNCTION cancel_everything();
SELECT clip_watch('poison', 'body', 'embedding');
INSERT INTO poison VALUES (1, 'never embedded');
RESET ROLE;
SQL
wait_for "SELECT last_error LIKE '57014 %' FROM clip_watch_status WHERE relation = 'poison'::regclass"
q -c "INSERT INTO notes VALUES (9004, 'embedded while another watch fails')"
wait_for "SELECT embedding IS NOT NULL FROM notes WHERE id = 9004"
[[ "$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'clip_search worker' AND datname = current_database()")" == "$pid" ]] \
  || die "watch: a failing watch ended the worker"
q -c "SELECT clip_unwatch('poison')" >/dev/null

log "watch: a watch follows a renamed column; an ordinary role sees the worker's state"
q -c "ALTER TABLE notes RENAME COLUMN body TO content"
q -c "INSERT INTO notes VALUES (9005, 'inserted after the rename')"
q -c "UPDATE notes SET content = 'updated after the rename' WHERE id = 1"
wait_for "SELECT count(embedding) = 2 FROM notes WHERE id IN (1, 9005)"
[[ "$(q -c "SELECT bool_and((embedding <=> clip_embed_text(content)) < 1e-6) FROM notes WHERE id IN (1, 9005)")" == t ]] \
  || die "watch: rows of a renamed column were not embedded from their new source"
[[ "$(q -c "SET ROLE \"Mallory Owner\"" -c "SELECT worker_state FROM clip_watch_status WHERE relation = 'escalate'::regclass")" \
   =~ ^(idle|active)$ ]] || die "watch: an ordinary role does not see that the worker runs"

log "watch: a broken watch is reported once, then tried again less and less often"
q <<'SQL'
CREATE TABLE broken (id int PRIMARY KEY, body text, embedding vector(32));
SELECT clip_watch('broken', 'body', 'embedding');
ALTER TABLE broken DROP COLUMN embedding;
INSERT INTO broken VALUES (1, 'a row of a broken watch');
SQL
wait_for "SELECT failures_in_a_row >= 4 FROM clip_search_internal.watches WHERE relation = 'broken'::regclass" 60
reported=$(grep -cF 'clip_search worker: public.broken.?: 42703' "$PGDATA/server.log" || true)
[[ $reported == 1 ]] || die "watch: the broken watch was reported $reported times, not once"
[[ "$(q -c "SELECT next_try_at > clock_timestamp() + interval '1 second' FROM clip_search_internal.watches
            WHERE relation = 'broken'::regclass")" == t ]] || die "watch: a failing watch is not put off"
[[ "$(q -c "SELECT source_column = 'body' AND target_column IS NULL AND last_error LIKE '42703 %'
            FROM clip_watch_status WHERE relation = 'broken'::regclass")" == t ]] \
  || die "watch: clip_watch_status does not show the broken watch"
q -c "INSERT INTO notes VALUES (9006, 'embedded beside a broken watch')"
wait_for "SELECT embedding IS NOT NULL FROM notes WHERE id = 9006"
q -c "SELECT clip_unwatch('broken')" >/dev/null

log "watch: shadowing objects planted in public never run in the worker (tests/hostile_schema/plant.sql)"
h() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$hostile_db" "$@"; }
h <<SQL
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
SET ROLE clip_hostile_owner;
CREATE TABLE docs (id int PRIMARY KEY, body text, embedding vector(32));
SELECT clip_watch('docs', 'body', 'embedding');
\\i $ROOT/tests/hostile_schema/plant.sql
RESET ROLE;
CREATE TABLE admin_docs (id int PRIMARY KEY, body text, embedding vector(32));
SELECT public.clip_watch('admin_docs'::pg_catalog.regclass, 'body'::text, 'embedding'::text);
INSERT INTO docs SELECT i, 'a document of the owner' FROM pg_catalog.generate_series(1, 20) i;
INSERT INTO admin_docs SELECT i, 'a document of the superuser' FROM pg_catalog.generate_series(1, 20) i;
SQL
[[ "$(h -c "SELECT pg_catalog.count(*) OPERATOR(pg_catalog.>) 7000 FROM pg_catalog.pg_proc
            WHERE pronamespace OPERATOR(pg_catalog.=) 'public'::pg_catalog.regnamespace")" == t ]] \
  || die "watch: the plants are not in place"
# Polled with pg_catalog's operators named: public's would be the plants.
for ((i = 0; i < 600; i++)); do
  [[ "$(h -c "SELECT (SELECT pg_catalog.count(embedding) FROM docs) OPERATOR(pg_catalog.+)
                     (SELECT pg_catalog.count(embedding) FROM admin_docs)")" == 40 ]] && break
  sleep 0.2
done
[[ "$(h -c "SELECT is_called FROM public.planted_calls")" == f ]] || die "watch: a planted object ran"
! grep -q 'planted .* ran' "$PGDATA/server.log" || die "watch: a planted object ran (see $PGDATA/server.log)"
[[ "$(h -c "SELECT (SELECT pg_catalog.count(embedding) FROM docs) OPERATOR(pg_catalog.+)
                   (SELECT pg_catalog.count(embedding) FROM admin_docs)")" == 40 ]] \
  || die "watch: the worker did not embed the rows of the database with the plants"
[[ "$(h -c "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'clip_hostile_owner'")" == f ]] \
  || die "watch: the planting role became a superuser"

log "watch: pg_terminate_backend stops the worker; the launcher starts it again"
old=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'clip_search worker' AND datname = current_database()")
[[ -n $old ]] || die "watch: no worker running"
q -c "SELECT pg_terminate_backend($old)" >/dev/null
wait_for "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $old)" 30
wait_for "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'clip_search worker' AND datname = current_database())" 60
q -c "INSERT INTO notes VALUES (9002, 'after the restart')"
wait_for "SELECT embedding IS NOT NULL FROM notes WHERE id = 9002"
if grep -q -E 'server process .* was terminated by signal|terminating any other active server processes' "$PGDATA/server.log"; then
  die "watch: a process crashed (see $PGDATA/server.log)"
fi
log "watch: a database of clip.worker_databases that does not exist is reported once, and served once created"
echo "clip.worker_databases = '$db, $hostile_db, clip_later'" >>"$PGDATA/postgresql.conf"
scripts/cluster.sh stop watch
scripts/cluster.sh start watch
missing_warnings() { grep -c 'the database "clip_later" of clip.worker_databases does not exist' "$PGDATA/server.log" || true; }
missing_reported() { [[ $(missing_warnings) -ge 1 ]]; }
wait_until 30 missing_reported || die "watch: no warning about the missing database clip_later"
wait_for "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'clip_search worker'" 30
# The launcher that started them is the first, not one the postmaster started again after a failure (10 s later).
wait_for "SELECT backend_start < pg_postmaster_start_time() + interval '9 s' FROM pg_stat_activity
          WHERE backend_type = 'clip_search launcher'" 5
sleep 3  # the launcher looks every second: a second warning would be in the log by now
[[ "$(missing_warnings)" == 1 ]] || die "watch: the missing database was reported $(missing_warnings) times"
"$PG_BIN/createdb" clip_later
wait_for "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'clip_search worker' AND datname = 'clip_later')" 30
! grep -q 'FATAL:  database "clip_later" does not exist' "$PGDATA/server.log" \
  || die "watch: a worker tried to connect to the missing database"
log "watch: a hot standby runs no worker"
primary_socket=$PGSOCKET primary_port=$PGPORT
(
  cluster_env watch-standby
  scripts/cluster.sh stop watch-standby
  rm -rf "$PGDATA" && mkdir -m 0700 "$PGDATA" && { [[ $(id -u) -ne 0 ]] || chown postgres:postgres "$PGDATA"; }
  as_owner "$PG_BIN/pg_basebackup" -h "$primary_socket" -p "$primary_port" -U postgres -D "$PGDATA" -R -X stream -c fast
  printf "port = %s\nunix_socket_directories = '%s'\n" "$PGPORT" "$PGSOCKET" >>"$PGDATA/postgresql.conf"
  scripts/cluster.sh start watch-standby
)
q -c "INSERT INTO notes VALUES (9003, 'replayed by the standby')"
lsn=$(q -c "SELECT pg_current_wal_insert_lsn()")
standby() { (cluster_env watch-standby && "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"); }
for ((i = 0; i < 300; i++)); do
  [[ "$(standby -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'" 2>/dev/null)" == t ]] && break
  sleep 0.2
done
[[ "$(standby -c "SELECT pg_is_in_recovery() AND EXISTS (SELECT FROM notes WHERE id = 9003)")" == t ]] \
  || die "watch: the standby did not replay the primary's insert"
[[ "$(standby -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'clip_search worker'")" == 0 ]] \
  || die "watch: a clip_search worker runs on the hot standby"
log "watch: two workers for the database share the rows"
printf "clip.worker_databases = '%s'\nclip.workers_per_database = 2\n" "$db" >>"$PGDATA/postgresql.conf"
scripts/cluster.sh stop watch
scripts/cluster.sh start watch
q <<'SQL'
CREATE TABLE shared_notes (id int PRIMARY KEY, body text NOT NULL, embedding vector(32));
-- Which process wrote each row's embedding, and how often.
CREATE TABLE shared_writes (id int NOT NULL, pid int NOT NULL);
CREATE FUNCTION note_shared_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO shared_writes VALUES (NEW.id, pg_backend_pid());
  RETURN NEW;
END $$;
CREATE TRIGGER note_shared_write AFTER UPDATE OF embedding ON shared_notes FOR EACH ROW
  WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION note_shared_write();
INSERT INTO shared_notes SELECT i, 'a shared note number ' || i FROM generate_series(1, 1000) i;
SELECT clip_watch('shared_notes', 'body', 'embedding');
SQL
wait_for "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'clip_search worker' AND datname = current_database()" 30
wait_for "SELECT count(embedding) = 1000 FROM shared_notes" 300
result=$(q <<'SQL'
SELECT (SELECT count(*) FROM shared_writes) = 1000
   AND (SELECT count(DISTINCT id) FROM shared_writes) = 1000
   AND (SELECT count(DISTINCT pid) FROM shared_writes) = 2
   AND (SELECT bool_and((embedding <=> clip_embed_text(body)) < 1e-6) FROM shared_notes)
   AND (SELECT workers = 2 AND rows_embedded_by_worker = 1000 FROM clip_watch_status
        WHERE relation = 'shared_notes'::regclass);
SQL
)
[[ $result == t ]] || die "watch: two workers did not share the rows, each embedded once ($(q -c \
  "SELECT pid, count(*) FROM shared_writes GROUP BY pid"))"
log "watch: all checks passed"
