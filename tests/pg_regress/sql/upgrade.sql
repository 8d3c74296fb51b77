-- Upgrades: 0.1.0 -> 0.2.0 -> current with stored embeddings, 0.2.0 -> current with a user trigger, 0.3.0 ->
-- current with a watch (and the model of clip.model_dir registered), and 0.4.0 -> current with a table searched by
-- clip_similarity. After each step the upgraded extension is compared, object by object, with a fresh install of
-- the same version: every function's full definition (arguments, defaults, return type, language, body or C
-- symbol, volatility, strictness, parallel safety, security), every table's columns, constraints, indexes and
-- policies, types, schemas, comments and privileges (the owner's written as 'owner'). scripts/test.sh puts the
-- install scripts of the earlier versions (tests/upgrade/) where PostgreSQL finds them.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;
CREATE DATABASE clip_upgrade;           -- 0.1.0, then updated to 0.2.0, then to the current version
CREATE DATABASE clip_upgrade_from_0_2;  -- a fresh 0.2.0, then updated to the current version
CREATE DATABASE clip_upgrade_from_0_3;  -- a fresh 0.3.0 with a watch, then updated to the current version
CREATE DATABASE clip_upgrade_from_0_4;  -- a fresh 0.4.0, then updated to the current version
CREATE DATABASE clip_fresh;             -- a fresh current version

-- Every object of the extension in database dbname, with its definition: equal sets mean equal extensions.
CREATE FUNCTION extension_objects(dbname text) RETURNS TABLE (object text, definition text)
LANGUAGE sql AS $function$
SELECT * FROM dblink(format('host=%s port=%s dbname=%s user=postgres',
                            current_setting('unix_socket_directories'), current_setting('port'), dbname), $query$
    WITH members AS (
        SELECT d.classid, d.objid, pg_describe_object(d.classid, d.objid, 0) AS object
        FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
        WHERE e.extname = 'clip_search' AND d.deptype = 'e'
          -- The row and array types of tables and views, which PostgreSQL 18 records as members too: their
          -- relations are compared.
          AND NOT EXISTS (SELECT FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
                          WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid
                            AND (t.typcategory = 'A' OR c.relkind IN ('r', 'p', 'v', 'm')))
    ), owned AS (
        SELECT m.*, x.owner, x.acl, x.kind FROM members m LEFT JOIN LATERAL (
            SELECT proowner, proacl, 'f'::"char" FROM pg_proc WHERE m.classid = 'pg_proc'::regclass AND oid = m.objid
            UNION ALL
            SELECT nspowner, nspacl, 'n'::"char" FROM pg_namespace WHERE m.classid = 'pg_namespace'::regclass AND oid = m.objid
            UNION ALL
            SELECT relowner, relacl, CASE relkind WHEN 'S' THEN 's'::"char" ELSE 'r' END FROM pg_class
            WHERE m.classid = 'pg_class'::regclass AND oid = m.objid
            UNION ALL
            SELECT typowner, typacl, 'T'::"char" FROM pg_type WHERE m.classid = 'pg_type'::regclass AND oid = m.objid
        ) x(owner, acl, kind) ON true
    )
    SELECT o.object, concat_ws(E'\n',
        CASE o.classid
        WHEN 'pg_proc'::regclass THEN (
            SELECT format(E'%s\nreturns %s, volatility %s, strict %s, parallel %s, security definer %s, leakproof %s',
                          CASE p.prokind WHEN 'a' THEN (
                              SELECT format('aggregate %s(%s) transition %s final %s combine %s state %s',
                                            p.proname, pg_get_function_arguments(p.oid), aggtransfn, aggfinalfn,
                                            aggcombinefn, format_type(aggtranstype, NULL))
                              FROM pg_aggregate WHERE aggfnoid = p.oid)
                          ELSE pg_get_functiondef(p.oid) END,
                          format_type(p.prorettype, NULL), p.provolatile, p.proisstrict, p.proparallel, p.prosecdef,
                          p.proleakproof)
            FROM pg_proc p WHERE p.oid = o.objid)
        WHEN 'pg_class'::regclass THEN (
            SELECT format(E'kind %s, row security %s, forced %s\ncolumns %s\nconstraints %s\nindexes %s\npolicies %s\ntriggers %s',
                c.relkind, c.relrowsecurity, c.relforcerowsecurity,
                (SELECT string_agg(format('%s %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                                          CASE WHEN a.attnotnull THEN ' not null' END,
                                          ' default ' || pg_get_expr(ad.adbin, ad.adrelid)), ', ' ORDER BY a.attnum)
                 FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                -- NOT NULL is in the columns; PostgreSQL 18's names of NOT NULL constraints follow their history.
                (SELECT string_agg(format('%s %s', conname, pg_get_constraintdef(oid)), ', ' ORDER BY conname)
                 FROM pg_constraint WHERE conrelid = c.oid AND contype <> 'n'),
                (SELECT string_agg(pg_get_indexdef(indexrelid), ', ' ORDER BY pg_get_indexdef(indexrelid))
                 FROM pg_index WHERE indrelid = c.oid),
                (SELECT string_agg(format('%s cmd %s permissive %s roles %s using %s check %s', polname, polcmd,
                                          polpermissive, polroles::regrole[], pg_get_expr(polqual, polrelid),
                                          pg_get_expr(polwithcheck, polrelid)), ', ' ORDER BY polname)
                 FROM pg_policy WHERE polrelid = c.oid),
                (SELECT string_agg(pg_get_triggerdef(oid), ', ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = c.oid))
            FROM pg_class c WHERE c.oid = o.objid)
        WHEN 'pg_operator'::regclass THEN (
            SELECT format('function %s, commutator %s, negator %s, restrict %s, join %s', oprcode::regprocedure,
                          oprcom::regoperator, oprnegate::regoperator, oprrest, oprjoin)
            FROM pg_operator WHERE oid = o.objid)
        WHEN 'pg_cast'::regclass THEN (
            SELECT format('function %s, context %s, method %s', castfunc::regprocedure, castcontext, castmethod)
            FROM pg_cast WHERE oid = o.objid)
        WHEN 'pg_type'::regclass THEN (
            SELECT format('type %s, category %s, input %s, output %s, length %s', typtype, typcategory, typinput,
                          typoutput, typlen)
            FROM pg_type WHERE oid = o.objid)
        END,
        'comment ' || (SELECT description FROM pg_description WHERE classoid = o.classid AND objoid = o.objid AND objsubid = 0),
        'privileges ' || (
            SELECT string_agg(format('%s=%s%s', CASE a.grantee WHEN o.owner THEN 'owner' WHEN 0 THEN 'public'
                                                ELSE a.grantee::regrole::text END,
                                     a.privilege_type, CASE WHEN a.is_grantable THEN '*' END),
                              ',' ORDER BY a.grantee = o.owner DESC, a.grantee, a.privilege_type)
            FROM aclexplode(coalesce(o.acl, acldefault(o.kind, o.owner))) a))
    FROM owned o
$query$) AS r(object text, definition text)
$function$;
-- The differences between two such sets: objects missing on either side, or defined differently.
CREATE FUNCTION extension_differences(upgraded text, fresh text) RETURNS TABLE (side text, object text)
LANGUAGE sql AS $function$
    WITH u AS (SELECT * FROM extension_objects(upgraded)), f AS (SELECT * FROM extension_objects(fresh))
    SELECT 'upgraded', object FROM (SELECT * FROM u EXCEPT SELECT * FROM f) d
    UNION ALL
    SELECT 'fresh', object FROM (SELECT * FROM f EXCEPT SELECT * FROM u) d
    ORDER BY 2, 1
$function$;

\c clip_upgrade
SET client_min_messages = warning;
CREATE EXTENSION clip_search VERSION '0.1.0' CASCADE;
RESET client_min_messages;
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, embedding vector(32));
INSERT INTO docs SELECT i, 'document number ' || i, clip_embed_text('document number ' || i) FROM generate_series(1, 50) i;
CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_cosine_ops);
SELECT to_regprocedure('clip_embed_texts(text[])') IS NULL AS batch_function_absent_before;
ALTER EXTENSION clip_search UPDATE TO '0.2.0';
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';

\c clip_upgrade_from_0_2
SET client_min_messages = warning;
CREATE EXTENSION clip_search VERSION '0.2.0' CASCADE;
RESET client_min_messages;
-- A user trigger made with 0.2.0's trigger function.
CREATE TABLE notes (id int PRIMARY KEY, body text, embedding vector(32));
CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE OF body ON notes
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('body', 'embedding');
INSERT INTO notes (id, body) VALUES (1, 'written with 0.2.0');

\c clip_upgrade_from_0_3
SET client_min_messages = warning;
CREATE EXTENSION clip_search VERSION '0.3.0' CASCADE;
RESET client_min_messages;
CREATE TABLE photos (id int PRIMARY KEY, caption text, embedding vector(32));
INSERT INTO photos VALUES (1, 'embedded with 0.3.0', NULL), (2, 'not yet', NULL);
SELECT clip_watch('photos', 'caption', 'embedding');
UPDATE photos SET embedding = clip_embed_text(caption) WHERE id = 1;
CREATE TABLE albums (id int, caption text, embedding vector(32)) PARTITION BY RANGE (id);
CREATE TABLE albums_low PARTITION OF albums FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (id);
CREATE TABLE albums_low_first PARTITION OF albums_low FOR VALUES FROM (0) TO (10);
SELECT clip_watch('albums', 'caption', 'embedding');

\c clip_upgrade_from_0_4
SET client_min_messages = warning;
CREATE EXTENSION clip_search VERSION '0.4.0' CASCADE;
RESET client_min_messages;
CREATE TABLE notes (id int PRIMARY KEY, body text, embedding vector(32));
INSERT INTO notes SELECT i, 'note ' || i, clip_embed_text('note ' || i) FROM generate_series(1, 5) i;
-- Until it is updated, its clip_similarity (real) runs on the current library.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set images :abs_srcdir '/../fixtures/images/'
SELECT pg_typeof(clip_similarity('[1,0]'::vector, '[1,1]'::vector)) AS returns_before_update,
       round(clip_similarity('[1,0]'::vector, '[1,1]'::vector)::numeric, 4) AS similarity,
       round(clip_similarity('a photo', pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png'))::numeric, 4)
           = round(clip_similarity(clip_embed_text('a photo'), clip_embed_image(pg_read_binary_file(:'images' || 'chelsea_rgb_200x133.png')))::numeric, 4)
           AS text_image_consistent;

\c clip_regress
-- 0.1.0 updated to 0.2.0 is a fresh 0.2.0.
SELECT * FROM extension_differences('clip_upgrade', 'clip_upgrade_from_0_2');

\c clip_upgrade
ALTER EXTENSION clip_search UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';
-- Stored vectors are still what the functions compute, and the index still serves searches.
SELECT count(*) AS rows, bool_and(embedding = clip_embed_text(body)) AS unchanged FROM docs;
SET enable_seqscan = off;
SELECT id FROM docs ORDER BY embedding <=> clip_embed_text('document number 7') LIMIT 1;
RESET enable_seqscan;
-- The new functions work on the old data.
SELECT (clip_embed_texts(ARRAY[body]))[1] = embedding AS batch_matches FROM docs WHERE id = 1;
ALTER TABLE docs ADD COLUMN embedding2 vector(32);
SET client_min_messages = warning;
CALL clip_backfill('docs', 'body', 'embedding2', 20, on_error => 'skip');
RESET client_min_messages;
SELECT bool_and(embedding2 = embedding) AS backfill_matches FROM docs;

\c clip_upgrade_from_0_2
ALTER EXTENSION clip_search UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';
-- The user's trigger now runs the new trigger function.
INSERT INTO notes (id, body) VALUES (2, 'written with the current version');
UPDATE notes SET body = 'changed' WHERE id = 1;
SELECT id, embedding = clip_embed_text(body) AS embedded FROM notes ORDER BY id;

\c clip_upgrade_from_0_3
ALTER EXTENSION clip_search UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';
-- The watch is moved over: its columns by number, its trigger remade, and it follows a rename from now on.
SELECT relation, source_attnum, target_attnum, pending_index FROM clip_search_internal.watches;
ALTER TABLE photos RENAME COLUMN caption TO title;
UPDATE photos SET title = 'changed after the update' WHERE id = 1;
SELECT relation, source_column, target_column, rows_pending, rows_embedded FROM clip_watch_status;
-- The triggers of the watches are named by the target column's number, on the partitions too.
SELECT tgrelid::regclass AS relation, tgname FROM pg_trigger
WHERE tgfoid = 'clip_search_internal.watch_trigger()'::regprocedure ORDER BY 1;
-- The model of clip.model_dir, which made the stored embeddings, is registered under its manifest's name, as the
-- default, and the watched column is one of its users.
SELECT name, architecture, embed_dim, is_default FROM clip_models;
SELECT clip_search_internal.model_users('clip-tiny') AS users;
SELECT vector_dims(clip_embed_text('a photo', model => 'clip-tiny')) AS dims;

\c clip_upgrade_from_0_4
-- Privileges on clip_similarity, clip_backfill and clip_watch, which the updates replace, carry over.
CREATE ROLE clip_upgrade_reader;
REVOKE EXECUTE ON FUNCTION clip_similarity(vector, vector) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION clip_similarity(vector, vector) TO clip_upgrade_reader;
REVOKE EXECUTE ON PROCEDURE clip_backfill(regclass, text, text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE clip_backfill(regclass, text, text, integer, text) TO clip_upgrade_reader;
REVOKE EXECUTE ON FUNCTION clip_watch(regclass, text, text) FROM PUBLIC;
ALTER EXTENSION clip_search UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';
SELECT has_function_privilege('public', 'clip_similarity(vector, vector)', 'EXECUTE') AS public_may,
       has_function_privilege('clip_upgrade_reader', 'clip_similarity(vector, vector)', 'EXECUTE') AS reader_may,
       has_function_privilege('public', 'clip_similarity(text, bytea)', 'EXECUTE') AS public_may_text_image;
SELECT has_function_privilege('public', 'clip_backfill(regclass, text, text, integer, text, text)', 'EXECUTE')
           AS public_may_backfill,
       has_function_privilege('clip_upgrade_reader', 'clip_backfill(regclass, text, text, integer, text, text)',
                              'EXECUTE') AS reader_may_backfill,
       has_function_privilege('public', 'clip_watch(regclass, text, text, text)', 'EXECUTE') AS public_may_watch;
-- They are the user's, not the extension's initial privileges, which pg_dump leaves out.
SELECT count(*) AS recorded_as_initial FROM pg_init_privs
WHERE objoid IN ('clip_similarity(vector, vector)'::regprocedure,
                 'clip_backfill(regclass, text, text, integer, text, text)'::regprocedure,
                 'clip_watch(regclass, text, text, text)'::regprocedure);
GRANT EXECUTE ON FUNCTION clip_similarity(vector, vector) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION clip_similarity(vector, vector) FROM clip_upgrade_reader;
GRANT EXECUTE ON PROCEDURE clip_backfill(regclass, text, text, integer, text, text) TO PUBLIC;
REVOKE EXECUTE ON PROCEDURE clip_backfill(regclass, text, text, integer, text, text) FROM clip_upgrade_reader;
GRANT EXECUTE ON FUNCTION clip_watch(regclass, text, text, text) TO PUBLIC;
DROP ROLE clip_upgrade_reader;
-- clip_similarity now gives double precision, as 1 - (a <=> b) does, and the stored vectors are unchanged.
SELECT min(pg_typeof(clip_similarity(embedding, embedding))::text) AS returns,
       bool_and(abs(clip_similarity(embedding, clip_embed_text(body)) - 1) < 1e-6) AS unchanged
FROM notes;

\c clip_fresh
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
RESET client_min_messages;
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';

\c clip_regress
-- What is compared: the extension's objects by kind.
SELECT split_part(object, ' ', 1) AS kind, count(*) AS objects
FROM extension_objects('clip_fresh') GROUP BY 1 ORDER BY 1;
-- Both upgrade paths give the fresh install, object by object.
SELECT * FROM extension_differences('clip_upgrade', 'clip_fresh');
SELECT * FROM extension_differences('clip_upgrade_from_0_2', 'clip_fresh');
SELECT * FROM extension_differences('clip_upgrade_from_0_3', 'clip_fresh');
SELECT * FROM extension_differences('clip_upgrade_from_0_4', 'clip_fresh');
SELECT (SELECT count(*) FROM extension_differences('clip_upgrade', 'clip_fresh')) AS differences_from_0_1_0,
       (SELECT count(*) FROM extension_differences('clip_upgrade_from_0_2', 'clip_fresh')) AS differences_from_0_2_0,
       (SELECT count(*) FROM extension_differences('clip_upgrade_from_0_3', 'clip_fresh')) AS differences_from_0_3_0,
       (SELECT count(*) FROM extension_differences('clip_upgrade_from_0_4', 'clip_fresh')) AS differences_from_0_4_0;

-- DROP EXTENSION takes everything with it, the helpers' schema and the failures table included.
\c clip_fresh
DROP EXTENSION clip_search;
SELECT to_regnamespace('clip_search_internal') IS NULL AS helper_schema_dropped,
       to_regclass('clip_backfill_failures') IS NULL AS failures_table_dropped;

\c clip_regress
DROP DATABASE clip_upgrade;
DROP DATABASE clip_upgrade_from_0_2;
DROP DATABASE clip_upgrade_from_0_3;
DROP DATABASE clip_upgrade_from_0_4;
DROP DATABASE clip_fresh;
DROP FUNCTION extension_differences(text, text), extension_objects(text);
