-- clip_watch's SQL surface, without a worker (the worker itself: tests/watch.sh, on a cluster with
-- shared_preload_libraries): what a watch creates and removes, who may watch what, and the status view.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
CREATE TABLE watched (id int PRIMARY KEY, body text, embedding vector(32));
INSERT INTO watched SELECT i, 'row ' || i FROM generate_series(1, 5) i;
SELECT clip_watch('watched', 'body', 'embedding');
SELECT tgname, pg_get_triggerdef(oid) ~ 'BEFORE UPDATE OF body' AS on_source_updates FROM pg_trigger
WHERE tgrelid = 'watched'::regclass;
SELECT indexrelid::regclass AS pending_index, pg_get_expr(indpred, indrelid) AS predicate FROM pg_index
WHERE indrelid = 'watched'::regclass AND NOT indisprimary;
SELECT relation, rows_pending, rows_embedded, rows_failed, worker_state, time_left FROM clip_watch_status;
-- The time left is the rows due at the last batch's rate, as the worker records it.
UPDATE clip_search_internal.watches SET last_batch_rate = 2 WHERE relation = 'watched'::regclass;
SELECT rows_pending, last_batch_rows_per_s, time_left FROM clip_watch_status;
UPDATE clip_search_internal.watches SET last_batch_rate = NULL WHERE relation = 'watched'::regclass;
-- An update of the source clears an embedded row's target, so the worker embeds it again.
UPDATE watched SET embedding = clip_embed_text(body) WHERE id = 1;
UPDATE watched SET body = 'changed' WHERE id = 1;
SELECT embedding IS NULL AS cleared FROM watched WHERE id = 1;
SELECT pg_temp.error_of($$SELECT clip_watch('watched', 'body', 'embedding')$$);
SELECT pg_temp.error_of($$SELECT clip_watch('watched', 'nothing', 'embedding')$$);
-- A long name of multibyte characters: the index's name is cut to 63 bytes, as PostgreSQL cuts it.
CREATE TABLE "ééééééééééééééééééééééééééééééééééééééééé" (id int PRIMARY KEY, body text, embedding vector(32));
SELECT clip_watch('"ééééééééééééééééééééééééééééééééééééééééé"', 'body', 'embedding');
SELECT octet_length(pending_index::text) <= 63 + 2 AS index_name_fits FROM clip_search_internal.watches
WHERE relation = '"ééééééééééééééééééééééééééééééééééééééééé"'::regclass;
SELECT clip_unwatch('"ééééééééééééééééééééééééééééééééééééééééé"');
DROP TABLE "ééééééééééééééééééééééééééééééééééééééééé";
-- A parent of inheriting tables: its trigger would not see their updates.
CREATE TABLE inherited_parent (id int, body text, embedding vector(32));
CREATE TABLE inherited_child () INHERITS (inherited_parent);
SELECT pg_temp.error_of($$SELECT clip_watch('inherited_parent', 'body', 'embedding')$$);
DROP TABLE inherited_parent CASCADE;

-- Only the table's owner (or a member of its role) may watch or unwatch it.
CREATE INDEX watched_body ON watched (body);
CREATE ROLE clip_watch_stranger;
CREATE SCHEMA strangers AUTHORIZATION clip_watch_stranger;
CREATE TABLE strangers.own_table (id int PRIMARY KEY, body text, embedding vector(32));
ALTER TABLE strangers.own_table OWNER TO clip_watch_stranger;
SET ROLE clip_watch_stranger;
SELECT pg_temp.error_of($$SELECT clip_unwatch('watched')$$);
SELECT pg_temp.error_of($$INSERT INTO clip_search_internal.watches (relation, source_attnum, target_attnum, pending_index)
                          VALUES ('watched', 2, 3, 'watched_pkey')$$);
SELECT clip_watch('strangers.own_table', 'body', 'embedding');
-- Each role sees the watches of the tables it may read, in the view and in the table behind it.
SELECT relation FROM clip_watch_status ORDER BY 1;
SELECT relation FROM clip_search_internal.watches ORDER BY 1;
-- A watch's row inserted by hand for one's own table, naming another table's index: unwatching it drops only the
-- trigger, never that index.
SELECT clip_unwatch('strangers.own_table');
SELECT pg_temp.error_of($$INSERT INTO clip_search_internal.watches (relation, source_attnum, target_attnum,
                          pending_index, watched_at) VALUES ('strangers.own_table', 2, 3, 'watched_body', '-infinity')$$);
SELECT pg_temp.error_of($$INSERT INTO clip_search_internal.watches (relation, source_attnum, target_attnum,
                          pending_index, next_try_at) VALUES ('strangers.own_table', 2, 3, 'watched_body', 'infinity')$$);
INSERT INTO clip_search_internal.watches (relation, source_attnum, target_attnum, pending_index)
VALUES ('strangers.own_table', 2, 3, 'watched_body');
CREATE TRIGGER clip_watch_3 BEFORE UPDATE OF body ON strangers.own_table FOR EACH ROW
    EXECUTE FUNCTION clip_search_internal.watch_trigger('3');
RESET ROLE;
SELECT clip_unwatch('strangers.own_table');
SELECT count(*) AS other_index_kept FROM pg_class WHERE relname = 'watched_body';
DROP INDEX watched_body;
SELECT clip_watch('strangers.own_table', 'body', 'embedding');
SELECT clip_unwatch('strangers.own_table');
DROP SCHEMA strangers CASCADE;
DROP ROLE clip_watch_stranger;

-- A watch follows a renamed column; one whose column was dropped shows as broken in the status, which still
-- answers, and updates of the table go on.
ALTER TABLE watched RENAME COLUMN body TO content;
ALTER TABLE watched RENAME COLUMN embedding TO vec;
UPDATE watched SET vec = clip_embed_text(content) WHERE id = 2;
UPDATE watched SET content = 'renamed' WHERE id = 2;
SELECT vec IS NULL AS cleared_after_rename FROM watched WHERE id = 2;
SELECT relation, source_column, target_column, rows_pending, rows_embedded FROM clip_watch_status;
SELECT b.* FROM clip_search_internal.watches w
CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 2) b;
ALTER TABLE watched DROP COLUMN vec;
UPDATE watched SET content = 'after the drop' WHERE id = 2;
SELECT relation, source_column, target_column, rows_pending, rows_embedded FROM clip_watch_status;
SELECT b.* FROM clip_search_internal.watches w
CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 2) b;
SELECT clip_unwatch('watched');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'watched'::regclass;
SELECT count(*) AS indexes_left FROM pg_index WHERE indrelid = 'watched'::regclass AND NOT indisprimary;
SELECT pg_temp.error_of($$SELECT clip_unwatch('watched')$$);
DROP TABLE watched;
