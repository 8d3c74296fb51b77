-- A role that may create objects in public (here the database's owner, as on PostgreSQL 15 and later) plants
-- operators, functions and aggregates there that would stand in for pg_catalog's and for the extension's own
-- (tests/hostile_schema/plant.sql lists them), and then superusers use every part of the extension written in SQL:
-- the trigger function, clip_backfill (both error modes), clip_watch, a watch's batch as the worker runs it (the
-- worker itself: tests/watch.sh), clip_unwatch, the status view, the failures table's policies, and ALTER EXTENSION
-- UPDATE from 0.3.0 with the plants in place; and an install whose type name vector is not pgvector's. Their
-- session's search_path puts public first in the statements that use the extension, the worst case. No
-- planted object may run: each one that does raises a WARNING (which this file's expected output does not have),
-- draws from the sequence public.planted_calls and makes its owner a superuser, which the end checks.
-- The superusers' own statements here name pg_catalog's operators explicitly: with public first, an unqualified
-- operator of theirs would be the plant's.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set plant :abs_srcdir '/../hostile_schema/plant.sql'
\set cat :abs_srcdir '/../fixtures/images/chelsea_rgb_200x133.png'
\set tiny :abs_srcdir '/../fixtures/tiny-model'
SET client_min_messages = warning;
CREATE ROLE clip_hostile_owner LOGIN;
CREATE DATABASE clip_hostile OWNER clip_hostile_owner;
CREATE DATABASE clip_hostile_upgrade OWNER clip_hostile_owner;
CREATE DATABASE clip_hostile_types OWNER clip_hostile_owner;
RESET client_min_messages;

\c clip_hostile
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
RESET client_min_messages;
-- Every routine of the extension written in SQL pins its search_path, except the procedure, which cannot (a
-- procedure with a SET clause cannot COMMIT) and calls only functions that do. One is a security definer.
SELECT p.oid::regprocedure AS routine, p.prokind
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'clip_search'
JOIN pg_language l ON l.oid = p.prolang
WHERE l.lanname <> 'c' AND p.proconfig IS DISTINCT FROM ARRAY['search_path=pg_catalog, pg_temp']
ORDER BY 1;
SELECT p.oid::regprocedure AS security_definer
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'clip_search'
WHERE p.prosecdef ORDER BY 1;
SELECT count(*) AS sql_routines
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'clip_search'
JOIN pg_language l ON l.oid = p.prolang WHERE l.lanname <> 'c';

-- The owner's tables, then the plants.
SET ROLE clip_hostile_owner;
CREATE TABLE docs (id int PRIMARY KEY, body text, title varchar(40), image bytea,
                   e_body vector(32), e_title vector(32), e_image vector(32), e_watch vector(32));
CREATE TRIGGER docs_title BEFORE INSERT OR UPDATE OF title ON docs
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('title', 'e_title');
CREATE TABLE parts (id int, body text, e vector(32)) PARTITION BY RANGE (id);
CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (100);
\set ECHO none
\i :plant
DO $$
DECLARE
    row_type text;
BEGIN
    FOR row_type IN SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
                    WHERE c.relowner OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r
                                                             WHERE r.rolname OPERATOR(pg_catalog.=) current_user)
                      AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p']::"char"[]) LOOP
        EXECUTE pg_catalog.format('CREATE FUNCTION public.jsonb_populate_record(%s, jsonb) RETURNS %s LANGUAGE plpgsql AS %L',
            row_type, row_type, public.planted_body('jsonb_populate_record(' || row_type || ', jsonb)', current_user));
    END LOOP;
END $$;
\set ECHO all
RESET ROLE;
SELECT count(*) > 7000 AS planted FROM pg_proc WHERE pronamespace OPERATOR(pg_catalog.=) 'public'::regnamespace;

SET search_path = public, pg_catalog;
-- The trigger function: an insert, and an update of the source.
INSERT INTO docs (id, body, title, image) VALUES
    (1, 'a photo of a cat', 'a cat', pg_catalog.pg_read_binary_file(:'cat')),
    (2, 'a photo of a dog', 'a dog', '\x00'::bytea),
    (3, NULL, NULL, NULL);
UPDATE docs SET title = 'a sleeping cat' WHERE id OPERATOR(pg_catalog.=) 1;
INSERT INTO parts (id, body) VALUES (1, 'one'), (2, 'two');
-- clip_backfill: texts, a partitioned table, then images: stopping at a bad one, skipping and recording it, and
-- again with another bad source (the stale record forgotten). (Its progress NOTICEs carry rates: left out.)
SET client_min_messages = warning;
CALL public.clip_backfill('docs'::regclass, 'body'::text, 'e_body'::text, 1, 'stop'::text);
CALL public.clip_backfill('parts'::regclass, 'body'::text, 'e'::text, 1, 'stop'::text);
CALL public.clip_backfill('docs'::regclass, 'image'::text, 'e_image'::text, 64, 'stop'::text);
CALL public.clip_backfill('docs'::regclass, 'image'::text, 'e_image'::text, 64, 'skip'::text);
UPDATE docs SET image = pg_catalog.decode('0001', 'hex') WHERE id OPERATOR(pg_catalog.=) 2;
CALL public.clip_backfill('docs'::regclass, 'image'::text, 'e_image'::text, 64, 'skip'::text);
RESET client_min_messages;
-- Watches: clip_watch, an update of the source, a batch as the worker runs it, the status view, a rename that the
-- watch follows, clip_unwatch.
SELECT public.clip_watch('docs'::regclass, 'body'::text, 'e_watch'::text);
UPDATE docs SET body = 'a photo of a bird' WHERE id OPERATOR(pg_catalog.=) 2;
SELECT b.done, b.skipped, b.error FROM clip_search_internal.watches w
CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 8) b;
SELECT relation, source_column, target_column, rows_pending, rows_embedded, rows_failed, worker_state
FROM public.clip_watch_status;
ALTER TABLE docs RENAME COLUMN body TO caption;
UPDATE docs SET caption = 'a photo of a fish' WHERE id OPERATOR(pg_catalog.=) 2;
SELECT b.done, b.skipped, b.error FROM clip_search_internal.watches w
CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 8) b;
SELECT relation, source_column, target_column, rows_pending, rows_embedded FROM public.clip_watch_status;
-- The owner, too, reads the status view and the failures table (row-level security).
SET ROLE clip_hostile_owner;
SELECT pg_catalog.count(*) AS watches_seen FROM public.clip_watch_status;
SELECT relation, source_column, sqlstate FROM public.clip_backfill_failures;
RESET ROLE;
-- A migration of the watched column: clip_migrate, a batch of both watches, the progress view, the switch,
-- clip_column_model, and a second migration cancelled.
SELECT public.clip_register_model('tiny'::text, :'tiny'::text, false);
SELECT public.clip_migrate('docs'::regclass, 'caption'::text, 'e_watch'::text, 'tiny'::text);
SELECT b.done, b.skipped, b.error FROM clip_search_internal.watches w
CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 8) b;
SELECT relation, source_column, target_column, new_column, model, rows_pending FROM public.clip_migrations;
SELECT public.clip_migrate_switch('docs'::regclass, true);
SELECT public.clip_column_model('docs'::regclass, 'e_watch'::text);
SELECT public.clip_migrate('docs'::regclass, 'caption'::text, 'e_watch'::text, 'tiny'::text);
SELECT public.clip_migrate_cancel('docs'::regclass);
SELECT public.clip_unwatch('docs'::regclass);
RESET search_path;
-- What was embedded is what the functions compute (row 2's caption changed after its backfill).
SELECT id, e_body = clip_embed_text(caption) AS body_embedded, e_title = clip_embed_text(title::text) AS title_embedded,
       e_image = CASE WHEN id = 1 THEN clip_embed_image(image) END AS image_embedded
FROM docs ORDER BY id;
SELECT id, e = clip_embed_text(body) AS embedded FROM parts ORDER BY id;

-- ALTER EXTENSION UPDATE from 0.3.0, planted before the older version was even installed: the update binds the
-- policies and the status view to pg_catalog's functions again, and moves a watch over.
\c clip_hostile_upgrade
SET client_min_messages = warning;
CREATE EXTENSION vector;
RESET client_min_messages;
SET ROLE clip_hostile_owner;
CREATE TABLE notes (id int PRIMARY KEY, body text, embedding vector(32));
INSERT INTO notes VALUES (1, 'a note', NULL);
\set ECHO none
\i :plant
\set ECHO all
RESET ROLE;
CREATE EXTENSION clip_search VERSION '0.3.0';
-- 0.3.0's watch of the notes, made as its clip_watch would make it (running 0.3.0's SQL would run the plants).
CREATE TRIGGER clip_watch BEFORE UPDATE OF body ON notes FOR EACH ROW
    EXECUTE FUNCTION clip_search_internal.watch_trigger('body', 'embedding');
CREATE INDEX notes_embedding_clip_pending ON notes ((embedding IS NULL)) WHERE embedding IS NULL;
INSERT INTO clip_search_internal.watches (relation, source_column, target_column, pending_index)
    VALUES ('notes'::regclass, 'body', 'embedding', 'notes_embedding_clip_pending'::regclass);
-- A watch's row that 0.3.0's clip_watch did not make (its policies, bound to the plants, could have let one in
-- for another role's table): no trigger, another table's index. The update leaves it behind.
CREATE TABLE admin_notes (id int PRIMARY KEY, body text, embedding vector(32));
INSERT INTO clip_search_internal.watches (relation, source_column, target_column, pending_index)
    VALUES ('admin_notes'::regclass, 'body', 'embedding', 'notes_embedding_clip_pending'::regclass);
ALTER EXTENSION clip_search UPDATE;
SELECT relation FROM clip_search_internal.watches;
SELECT pg_catalog.count(*) AS triggers_on_admin_notes FROM pg_trigger
WHERE tgrelid OPERATOR(pg_catalog.=) 'admin_notes'::regclass;
SET search_path = public, pg_catalog;
SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'clip_search';
SELECT relation, source_column, target_column, rows_pending FROM public.clip_watch_status;
UPDATE notes SET body = 'another note' WHERE id OPERATOR(pg_catalog.=) 1;
SELECT b.done, b.error FROM clip_search_internal.watches w
CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 8) b;
-- The watch's trigger took its column's number in its name.
SELECT tgname FROM pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) 'notes'::regclass;
SET ROLE clip_hostile_owner;
SELECT relation, rows_pending, rows_embedded FROM public.clip_watch_status;
SELECT pg_catalog.count(*) AS failures_seen FROM public.clip_backfill_failures;
RESET ROLE;
RESET search_path;

-- With pgvector in another schema, a type named vector in the extension's schema would stand in for pgvector's in
-- the install script's signatures: the install refuses.
\c clip_hostile_types
SET client_min_messages = warning;
CREATE SCHEMA ext;
CREATE EXTENSION vector SCHEMA ext;
RESET client_min_messages;
SET ROLE clip_hostile_owner;
CREATE TYPE public.vector AS (planted integer);
RESET ROLE;
\set SHOW_CONTEXT never
CREATE EXTENSION clip_search;
\set SHOW_CONTEXT errors
SELECT pg_catalog.count(*) AS installed FROM pg_extension WHERE extname OPERATOR(pg_catalog.=) 'clip_search';
\c clip_hostile_upgrade

-- No planted object ran, in either database, and their owner is no superuser.
SELECT is_called AS planted_ran_in_upgraded_database FROM public.planted_calls;
\c clip_hostile
SELECT is_called AS planted_ran FROM public.planted_calls;
\c clip_regress
SELECT rolsuper AS owner_became_superuser FROM pg_roles WHERE rolname = 'clip_hostile_owner';
DROP DATABASE clip_hostile;
DROP DATABASE clip_hostile_upgrade;
DROP DATABASE clip_hostile_types;
DROP ROLE clip_hostile_owner;
