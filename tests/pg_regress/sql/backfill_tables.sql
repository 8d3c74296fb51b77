-- clip_backfill on every kind of table (partitioned, inheritance, without a primary key), and through rows it
-- cannot embed: the error names the row's key; on_error => 'skip' records such rows and goes on.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set pixel :images 'tiny_rgb_1x1.png'
\set SHOW_CONTEXT never

-- A partitioned table whose partitions hold rows at the same ctids: each row must get the embedding of its own
-- source, not that of the row at its ctid in another partition.
CREATE TABLE readings (region int, id int, body text, embedding vector(32), PRIMARY KEY (region, id))
    PARTITION BY LIST (region);
CREATE TABLE readings_1 PARTITION OF readings FOR VALUES IN (1);
CREATE TABLE readings_2 PARTITION OF readings FOR VALUES IN (2);
CREATE TABLE readings_3 PARTITION OF readings FOR VALUES IN (3);
INSERT INTO readings (region, id, body)
SELECT r, i, format('region %s, reading %s', r, i) FROM generate_series(1, 3) r, generate_series(1, 20) i;
SELECT count(*) AS ctids_in_all_three_partitions FROM (SELECT ctid FROM readings GROUP BY ctid HAVING count(*) = 3) s;
\set VERBOSITY terse
CALL clip_backfill('readings', 'body', 'embedding', 7);
\set VERBOSITY default
SELECT tableoid::regclass AS partition, count(*) AS rows, count(embedding) AS embedded,
       bool_and(embedding = clip_embed_text(body)) AS each_row_its_own
FROM readings GROUP BY tableoid ORDER BY tableoid::regclass::text;

-- Inheritance: the parent's rows and its child's, whose ids and ctids are the same.
CREATE TABLE media (id int PRIMARY KEY, body text, embedding vector(32));
CREATE TABLE media_archived (archived_on date) INHERITS (media);
INSERT INTO media (id, body) SELECT i, 'media ' || i FROM generate_series(1, 10) i;
INSERT INTO media_archived (id, body) SELECT i, 'archived media ' || i FROM generate_series(1, 10) i;
\set VERBOSITY terse
CALL clip_backfill('media', 'body', 'embedding', 4);
\set VERBOSITY default
SELECT tableoid::regclass AS "table", count(*) AS rows, bool_and(embedding = clip_embed_text(body)) AS each_row_its_own
FROM media GROUP BY tableoid ORDER BY tableoid::regclass::text;

-- Rows that cannot be embedded. By default the first one stops the call, with its cause's SQLSTATE and its key;
-- the rows before it are kept (rows 1 to 4: the batches before it, and the row before it in its batch).
CREATE TABLE scans (id int PRIMARY KEY, image bytea, embedding vector(32));
INSERT INTO scans
SELECT i, CASE WHEN i IN (5, 11) THEN convert_to('not an image ' || i, 'UTF8') ELSE pg_read_binary_file(:'pixel') END
FROM generate_series(1, 12) i;
\set VERBOSITY terse
CALL clip_backfill('scans', 'image', 'embedding', 3);
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
SELECT array_agg(id ORDER BY id) AS embedded_before_the_bad_row FROM scans WHERE embedding IS NOT NULL;
SET client_min_messages = warning;
CALL clip_backfill('scans', 'image', 'embedding', 3);
RESET client_min_messages;
-- on_error => 'skip': every good row is embedded; the bad ones are recorded, with their key, SQLSTATE and message.
\set VERBOSITY terse
CALL clip_backfill('scans', 'image', 'embedding', 3, on_error => 'skip');
\set VERBOSITY default
SELECT count(*) AS rows, count(embedding) AS embedded,
       (SELECT bool_and(embedding = clip_embed_image(image)) FROM scans WHERE embedding IS NOT NULL) AS correct
FROM scans;
SELECT relation, source_column, row_table, row_key, sqlstate, message LIKE 'clip_embed_image: %' AS message_of_the_cause,
       source_md5 = md5(convert_to('not an image ' || (row_key->>'id'), 'UTF8')) AS source_md5,
       failed_at <= clock_timestamp() AS failed_at
FROM clip_backfill_failures ORDER BY (row_key->>'id')::int;
-- Later calls, whichever on_error, leave the recorded rows out instead of stopping on them again.
\set VERBOSITY terse
CALL clip_backfill('scans', 'image', 'embedding', 3);
\set VERBOSITY default
-- A fixed row is embedded by the next call, and its record goes; a row whose source changed but is still bad is
-- tried again, and stops the call again.
UPDATE scans SET image = pg_read_binary_file(:'pixel') WHERE id = 5;
UPDATE scans SET image = '\x00'::bytea WHERE id = 11;
\set VERBOSITY terse
CALL clip_backfill('scans', 'image', 'embedding', 3);
\set VERBOSITY default
SELECT id, CASE WHEN embedding IS NOT NULL THEN embedding = clip_embed_image(image) END AS embedded
FROM scans WHERE id IN (5, 11) ORDER BY id;
SELECT count(*) AS records_left FROM clip_backfill_failures;
\set VERBOSITY terse
CALL clip_backfill('scans', 'image', 'embedding', 3, on_error => 'skip');
\set VERBOSITY default
SELECT row_key, sqlstate, source_md5 = md5('\x00'::bytea) AS of_the_new_source FROM clip_backfill_failures;

-- A partitioned table without a primary key: a row is named by its partition and ctid.
CREATE TABLE drops (kind text, image bytea, embedding vector(32)) PARTITION BY LIST (kind);
CREATE TABLE drops_a PARTITION OF drops FOR VALUES IN ('a');
CREATE TABLE drops_b PARTITION OF drops FOR VALUES IN ('b');
INSERT INTO drops VALUES ('a', pg_read_binary_file(:'pixel')), ('a', pg_read_binary_file(:'pixel')),
                         ('b', pg_read_binary_file(:'pixel')), ('b', '\x00');
\set VERBOSITY terse
CALL clip_backfill('drops', 'image', 'embedding');
CALL clip_backfill('drops', 'image', 'embedding', on_error => 'skip');
\set VERBOSITY default
SELECT row_table, row_key, sqlstate FROM clip_backfill_failures WHERE relation = 'drops'::regclass;
SELECT tableoid::regclass AS partition, count(embedding) AS embedded FROM drops GROUP BY tableoid ORDER BY 1;

-- Only errors of a row's source count as bad rows: a target column of another dimension fails the call, and
-- records nothing.
CREATE TABLE small (id int PRIMARY KEY, body text, embedding vector(8));
INSERT INTO small VALUES (1, 'a'), (2, 'b');
CALL clip_backfill('small', 'body', 'embedding', on_error => 'skip');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS recorded FROM clip_backfill_failures WHERE relation = 'small'::regclass;
CALL clip_backfill('small', 'body', 'embedding', 2, 'ignore');
\echo :LAST_ERROR_SQLSTATE
CALL clip_backfill('small', 'body', 'embedding', 2, NULL);
\echo :LAST_ERROR_SQLSTATE

-- An ordinary role uses the trigger and the backfill (the helpers are in the extension's own schema), records its
-- own failures, and neither sees nor changes those of tables it may not read or update.
CREATE ROLE clip_backfill_user;
GRANT CREATE ON SCHEMA public TO clip_backfill_user;
SELECT pg_read_binary_file(:'pixel') AS pixel_bytes \gset
SET ROLE clip_backfill_user;
CREATE TABLE own_scans (id int PRIMARY KEY, image bytea, embedding vector(32));
INSERT INTO own_scans (id, image) VALUES (1, :'pixel_bytes'::bytea), (2, '\x00'), (3, :'pixel_bytes'::bytea);
\set VERBOSITY terse
CALL clip_backfill('own_scans', 'image', 'embedding', 2, on_error => 'skip');
\set VERBOSITY default
SELECT relation, row_key FROM clip_backfill_failures ORDER BY relation::text;
CREATE TRIGGER own_scans_embed BEFORE INSERT OR UPDATE OF image ON own_scans
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('image', 'embedding');
UPDATE own_scans SET image = :'pixel_bytes'::bytea WHERE id = 2;
INSERT INTO own_scans (id, image) VALUES (4, :'pixel_bytes'::bytea);
SELECT id, embedding = clip_embed_image(image) AS embedded FROM own_scans ORDER BY id;
\set VERBOSITY terse
CALL clip_backfill('own_scans', 'image', 'embedding');
\set VERBOSITY default
SELECT relation, row_key FROM clip_backfill_failures ORDER BY relation::text;
DELETE FROM clip_backfill_failures WHERE relation = 'scans'::regclass;
SELECT pg_temp.error_of($$INSERT INTO clip_backfill_failures (relation, source_column, row_table, row_key, source_md5, sqlstate, message)
                          VALUES ('scans', 'image', 'scans', '{"id": 1}', '', '22P03', 'forged')$$);
DROP TABLE own_scans;
RESET ROLE;
SELECT count(*) AS records_of_scans_still_there FROM clip_backfill_failures WHERE relation = 'scans'::regclass;
-- A role granted UPDATE on the target column only (a column privilege) backfills and records its failures too.
CREATE TABLE granted_scans (id int PRIMARY KEY, image bytea, embedding vector(32));
INSERT INTO granted_scans (id, image) VALUES (1, :'pixel_bytes'::bytea), (2, '\x00');
GRANT SELECT, UPDATE (embedding) ON granted_scans TO clip_backfill_user;
SET ROLE clip_backfill_user;
\set VERBOSITY terse
CALL clip_backfill('granted_scans', 'image', 'embedding', on_error => 'skip');
\set VERBOSITY default
SELECT relation, row_key FROM clip_backfill_failures WHERE relation = 'granted_scans'::regclass;
RESET ROLE;
SELECT count(embedding) AS embedded FROM granted_scans;
DELETE FROM clip_backfill_failures WHERE relation = 'granted_scans'::regclass;
DROP TABLE granted_scans;
REVOKE CREATE ON SCHEMA public FROM clip_backfill_user;
DROP ROLE clip_backfill_user;

DELETE FROM clip_backfill_failures;
DROP TABLE readings, media_archived, media, scans, drops, small;
