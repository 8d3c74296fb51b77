-- clip_search 0.4.0 -> 0.5.0: clip_similarity returns double precision, NaN for a zero vector, as 1 - (a <=> b)
-- does; clip_backfill refuses to start inside a transaction block; clip_backfill and clip_watch refuse a vector
-- column of another dimension than the model's; clip_watch warns when no background worker serves the database;
-- the public functions have descriptions.
-- The definitions below repeat sql/auto_embed.sql, sql/watch.sql, sql/comments.sql and pgrx's declarations of the
-- C functions (tests/pg_regress/sql/upgrade.sql compares an upgraded extension with a fresh install).
\echo Use "ALTER EXTENSION clip_search UPDATE TO '0.5.0'" to load this file. \quit

-- clip_similarity returns double precision, from C functions of their own: the declarations returning real are
-- replaced, and the EXECUTE privileges granted or revoked on them carry over. A view or function of a user's that
-- uses clip_similarity makes this fail; drop it, update, and create it again.
DO $update$
DECLARE
    text_image_acl pg_catalog.aclitem[] := (SELECT p.proacl FROM pg_catalog.pg_proc p WHERE p.oid
        OPERATOR(pg_catalog.=) '@extschema@.clip_similarity(text, bytea)'::pg_catalog.regprocedure);
    vectors_acl    pg_catalog.aclitem[] := (SELECT p.proacl FROM pg_catalog.pg_proc p WHERE p.oid
        OPERATOR(pg_catalog.=) '@extschema@.clip_similarity(vector, vector)'::pg_catalog.regprocedure);
    replaced record;
    granted  record;
BEGIN
    DROP FUNCTION @extschema@.clip_similarity(text, bytea);
    DROP FUNCTION @extschema@.clip_similarity(vector, vector);
    CREATE FUNCTION @extschema@.clip_similarity("text" text, "image" bytea) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_similarity_text_image_float8_wrapper';
    CREATE FUNCTION @extschema@.clip_similarity("a" vector, "b" vector) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_similarity_vectors_float8_wrapper';
    -- A NULL acl is the default, which the new functions have.
    FOR replaced IN
        SELECT '@extschema@.clip_similarity(text, bytea)'::pg_catalog.regprocedure AS function, text_image_acl AS acl
        UNION ALL
        SELECT '@extschema@.clip_similarity(vector, vector)'::pg_catalog.regprocedure, vectors_acl
    LOOP
        CONTINUE WHEN replaced.acl IS NULL;
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', replaced.function);
        FOR granted IN SELECT a.grantee, a.is_grantable FROM pg_catalog.aclexplode(replaced.acl) a
                       WHERE a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE' LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', replaced.function,
                CASE WHEN granted.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                     ELSE granted.grantee::pg_catalog.regrole::pg_catalog.text END,
                CASE WHEN granted.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END LOOP;
END
$update$;

-- An error unless the procedure caller, which calls it, may COMMIT (src/auto_embed.rs).
CREATE FUNCTION clip_search_internal.require_own_transaction(caller text) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'require_own_transaction_wrapper';

-- An error unless a vector column of a fixed dimension (vector(512), halfvec(512)) has the loaded model's
-- dimension: pgvector would refuse each row, deep in the embedding statement's context. Without a model there is
-- nothing to compare with; embedding then reports that itself.
CREATE FUNCTION clip_search_internal.check_dimension(relation regclass, column_name text, caller text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    declared integer;
    model    jsonb;
BEGIN
    SELECT a.atttypmod INTO declared FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = relation AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped
      AND t.typname IN ('vector', 'halfvec') AND a.atttypmod > 0;
    IF declared IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        model := @extschema@.clip_info();
    EXCEPTION WHEN OTHERS THEN
        RETURN;
    END;
    IF declared <> (model->>'embed_dim')::integer THEN
        RAISE EXCEPTION '%: column "%" of % holds vectors of % dimensions, and the model % makes vectors of %',
                caller, column_name, relation, declared, model->>'model', model->>'embed_dim'
            USING ERRCODE = 'datatype_mismatch',
                  HINT = format('Embed into a column of type vector(%s), or set clip.model_dir to the model the column was made for.',
                                model->>'embed_dim');
    END IF;
END
$function$;

-- clip_backfill's start: checks the arguments, forgets stale failures, counts the rows to embed and says so.
CREATE OR REPLACE FUNCTION clip_search_internal.backfill_start(target_table regclass, source_column text, target_column text,
    batch_size integer, on_error text, caller_search_path text) RETURNS clip_search_internal.backfill_progress
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    progress clip_search_internal.backfill_progress;
    recorded bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'clip_backfill: batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF on_error IS NULL OR on_error NOT IN ('stop', 'skip') THEN
        RAISE EXCEPTION 'clip_backfill: on_error must be ''stop'' or ''skip'', not %', coalesce(quote_literal(on_error), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM clip_search_internal.embed_call(
        clip_search_internal.column_type(target_table, source_column, 'clip_backfill'), 'clip_backfill', true, '');
    PERFORM clip_search_internal.column_type(target_table, target_column, 'clip_backfill');
    PERFORM clip_search_internal.check_dimension(target_table, target_column, 'clip_backfill');
    PERFORM clip_search_internal.forget_stale_failures(target_table, source_column, target_column);
    SELECT count(*) INTO recorded FROM @extschema@.clip_backfill_failures f
    WHERE f.relation = target_table AND f.source_column = backfill_start.source_column;
    progress := ROW(target_table, source_column, target_column, batch_size, on_error, caller_search_path, 0, 0, 0,
                    clock_timestamp(), false, NULL, NULL, NULL, NULL);
    EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL', target_table, target_column, source_column)
        INTO progress.total;
    progress.total := progress.total - recorded;
    RAISE NOTICE 'clip_backfill: % rows of % to embed', progress.total, target_table;
    IF recorded > 0 THEN
        RAISE NOTICE 'clip_backfill: % rows left out: they failed before with the same source (see clip_backfill_failures)', recorded;
    END IF;
    RETURN progress;
END
$function$;

-- Embeds the rows of an existing table (partitions and inheriting tables included) whose target is NULL and whose
-- source is not, batch_size rows at a time, committing after each batch and reporting progress as NOTICEs.
-- Interrupted (cancelled, failed, server stopped), it keeps what it committed; CALL it again to resume: nothing is
-- embedded twice, nothing is missed. Concurrent calls share the work (SKIP LOCKED). A row whose source cannot be
-- embedded stops the call with an error that names the row's key (on_error => 'stop'), or is recorded in
-- clip_backfill_failures and left out (on_error => 'skip'). Must be CALLed as a statement of its own (in
-- autocommit mode, outside BEGIN ... COMMIT): it says so before it starts otherwise.
-- The body names only functions with their schema, and uses no operator: see the top of this file.
CREATE OR REPLACE PROCEDURE @extschema@.clip_backfill(target_table regclass, source_column text, target_column text,
                                           batch_size integer DEFAULT 64, on_error text DEFAULT 'stop')
LANGUAGE plpgsql AS $procedure$
DECLARE
    progress clip_search_internal.backfill_progress;
BEGIN
    PERFORM clip_search_internal.require_own_transaction('clip_backfill');
    progress := clip_search_internal.backfill_start(target_table, source_column, target_column, batch_size, on_error,
                                                    pg_catalog.current_setting('search_path'::pg_catalog.text));
    LOOP
        progress := clip_search_internal.backfill_batch(progress);
        EXIT WHEN progress.finished;
        COMMIT;
        PERFORM clip_search_internal.backfill_report(progress);
    END LOOP;
END
$procedure$;

-- Whether the server starts a background worker for this database: clip_search in shared_preload_libraries
-- (which defines clip.worker_databases) and this database in clip.worker_databases, whose names are trimmed of
-- white space as the launcher trims them.
CREATE FUNCTION clip_search_internal.worker_configured() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce(bool_or(regexp_replace(d, '^\s+|\s+$', '', 'g') = current_database()), false)
    FROM unnest(string_to_array(current_setting('clip.worker_databases', true), ',')) AS d
$function$;

-- Has the background worker keep target_column embedded from source_column in target_table (a table or a
-- partitioned table; not a parent of inheriting tables, whose updates its trigger would not see): rows inserted or
-- updated from now on, and the rows whose target is NULL today. Creates a trigger and a small partial index on the
-- table; needs the rights to create them (its owner). The worker embeds as the table's owner. Rows that cannot be
-- embedded are recorded in clip_backfill_failures and tried again when their source changes. Progress:
-- clip_watch_status.
CREATE OR REPLACE FUNCTION @extschema@.clip_watch(target_table regclass, source_column text, target_column text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    -- As type name, cut to 63 bytes the way PostgreSQL cuts the index's name (text's left() counts characters).
    index_name    name := format('%s_%s_clip_pending', (SELECT relname FROM pg_class WHERE oid = target_table),
                                 target_column);
    index_oid     regclass;
    source_attnum smallint;
    target_attnum smallint;
BEGIN
    PERFORM clip_search_internal.check_owner(target_table, 'clip_watch');
    PERFORM clip_search_internal.embed_call(
        clip_search_internal.column_type(target_table, source_column, 'clip_watch'), 'clip_watch', true, '');
    PERFORM clip_search_internal.column_type(target_table, target_column, 'clip_watch');
    PERFORM clip_search_internal.check_dimension(target_table, target_column, 'clip_watch');
    source_attnum := clip_search_internal.column_attnum(target_table, source_column, 'clip_watch');
    target_attnum := clip_search_internal.column_attnum(target_table, target_column, 'clip_watch');
    IF EXISTS (SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = target_table AND NOT c.relispartition) THEN
        RAISE EXCEPTION 'clip_watch: % has inheriting tables, whose updates a trigger on it would not see',
            target_table USING ERRCODE = 'feature_not_supported',
            HINT = 'Watch each of the tables, or make it a partitioned table.';
    END IF;
    IF EXISTS (SELECT FROM clip_search_internal.watches w WHERE w.relation = target_table) THEN
        RAISE EXCEPTION 'clip_watch: % is watched already', target_table USING ERRCODE = 'duplicate_object',
            HINT = 'clip_unwatch it first to watch another column.';
    END IF;
    PERFORM clip_search_internal.create_watch_trigger(target_table, source_attnum, target_attnum);
    EXECUTE format('CREATE INDEX %I ON %s ((%I IS NULL)) WHERE %I IS NULL',
                   index_name, target_table, target_column, target_column);
    SELECT c.oid INTO index_oid FROM pg_class c
    WHERE c.relname = index_name AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = target_table);
    INSERT INTO clip_search_internal.watches (relation, source_attnum, target_attnum, pending_index)
    VALUES (target_table, source_attnum, target_attnum, index_oid);
    IF NOT clip_search_internal.worker_configured() THEN
        RAISE WARNING 'clip_watch: no background worker embeds the watched columns of database %', current_database()
            USING DETAIL = 'The watch is recorded, and rows will wait with a NULL embedding until a worker runs.',
                  HINT = format('In postgresql.conf, add clip_search to shared_preload_libraries and %s to clip.worker_databases, then restart the server. Meanwhile CALL clip_backfill(...) embeds the rows.',
                                current_database());
    END IF;
END
$function$;

-- --- descriptions (sql/comments.sql) -----------------------------------------------------------------------------
COMMENT ON FUNCTION @extschema@.clip_embed_text(text) IS
    'The L2-normalised CLIP embedding of a text, as a vector of the model''s dimension';
COMMENT ON FUNCTION @extschema@.clip_embed_text(text, text) IS
    'The embedding of a text in a language, for models that take a language code (clip_info()->''languages'')';
COMMENT ON FUNCTION @extschema@.clip_embed_image(bytea) IS
    'The L2-normalised CLIP embedding of an image (JPEG, PNG, WebP, GIF, BMP or TIFF)';
COMMENT ON FUNCTION @extschema@.clip_embed_texts(text[]) IS
    'Embeddings of an array of texts, in batches of clip.batch_size, in input order; NULL gives NULL';
COMMENT ON FUNCTION @extschema@.clip_embed_images(bytea[]) IS
    'Embeddings of an array of images, in batches of clip.batch_size, in input order; NULL gives NULL';
COMMENT ON FUNCTION @extschema@.clip_similarity(text, bytea) IS
    'Cosine similarity of a text and an image under the model: 1 - (text <=> image) of their embeddings';
COMMENT ON FUNCTION @extschema@.clip_similarity(vector, vector) IS
    'Cosine similarity of two vectors: 1 - (a <=> b), NaN when either is the zero vector';
COMMENT ON FUNCTION @extschema@.clip_classify(bytea, text[], text) IS
    'Zero-shot classification of an image among labels put into a template, most probable label first';
COMMENT ON FUNCTION @extschema@.clip_blend(vector[], real[]) IS
    'One query vector from several: the normalised weighted sum of the normalised vectors';
COMMENT ON FUNCTION @extschema@.clip_blend(vector, vector, real) IS
    'One query vector from two: (1 - weight) of a and weight of b, normalised';
COMMENT ON FUNCTION @extschema@.clip_tokenize(text) IS
    'A text''s token ids as the model''s tokenizer gives them, start and end tokens included, not padded';
COMMENT ON FUNCTION @extschema@.clip_info() IS
    'The model, ONNX Runtime, the settings in force and this backend''s memory, as jsonb';
COMMENT ON FUNCTION @extschema@.clip_embed_trigger() IS
    'Trigger function: fills a vector column from a text or bytea column; arguments: source column, target column';
COMMENT ON PROCEDURE @extschema@.clip_backfill(regclass, text, text, integer, text) IS
    'Embeds the rows whose target is NULL, committing each batch; resumable; CALL it in autocommit mode';
COMMENT ON FUNCTION @extschema@.clip_watch(regclass, text, text) IS
    'Has the background worker keep a vector column embedded from a text or bytea column';
COMMENT ON FUNCTION @extschema@.clip_unwatch(regclass) IS
    'Stops watching a table; its embeddings stay';
COMMENT ON VIEW @extschema@.clip_watch_status IS
    'Progress of each watch the current role may read, and whether the background worker runs';
COMMENT ON TABLE @extschema@.clip_backfill_failures IS
    'Rows clip_backfill or a watch could not embed, with the error, until their source changes';
