-- Auto-embedding: a trigger function that fills a vector column on INSERT and UPDATE, a procedure that backfills
-- existing rows in committed batches, and the table where it records the rows it could not embed. Hand-written
-- SQL, included by src/auto_embed.rs. The latest upgrade script repeats what changed: keep both the same
-- (tests/pg_regress/sql/upgrade.sql compares an upgraded extension with a fresh install).
--
-- Name resolution: every function here pins `search_path = pg_catalog, pg_temp`, so that no operator, function or
-- type a user created (in public, say) can stand in for a built-in one while a more privileged role runs it; the
-- extension's own objects are named with their schema, and called with arguments of their exact types, so that
-- no overload a user adds to the extension's schema is a better match. The one procedure, which cannot pin a
-- setting (a procedure with a SET clause cannot COMMIT), calls only such functions and uses no operator. The
-- statements that update a user's table, and so fire its triggers, run under the search_path of the role that
-- called clip_backfill (as its own UPDATE would), and name every operator, function and type they use with its
-- schema.

-- The helpers live in a schema of their own, out of the user's list of functions. It belongs to the extension
-- (DROP EXTENSION drops it). Everyone may use it: the trigger and the backfill run as the user who fires or calls
-- them.
CREATE SCHEMA clip_search_internal;
COMMENT ON SCHEMA clip_search_internal IS 'helpers of the clip_search extension; not an interface';
GRANT USAGE ON SCHEMA clip_search_internal TO PUBLIC;

-- Fills TG_ARGV[1] (a vector column) from TG_ARGV[0] (a text, varchar or bytea column) with the text or the
-- image tower, chosen by the source column's type, of the registered model TG_ARGV[2] (the functions' default
-- without it):
--   CREATE TRIGGER photos_embed BEFORE INSERT OR UPDATE OF image ON photos
--       FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('image', 'embedding');
-- On UPDATE it re-embeds only when the source changed. A failing embedding aborts the statement.
CREATE FUNCTION @extschema@.clip_embed_trigger() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    source_column text := TG_ARGV[0];
    target_column text := TG_ARGV[1];
    model         text := CASE WHEN TG_NARGS = 3 THEN TG_ARGV[2] END;
    source_type   regtype;
    unchanged     boolean;
    embedding     text;  -- the vector's text form: no dependency on the schema pgvector lives in
BEGIN
    IF TG_NARGS NOT IN (2, 3) OR TG_LEVEL <> 'ROW' OR TG_WHEN <> 'BEFORE' OR TG_OP NOT IN ('INSERT', 'UPDATE') THEN
        RAISE EXCEPTION 'clip_embed_trigger: use it as a BEFORE INSERT OR UPDATE ... FOR EACH ROW trigger with the source column, the target column and, optionally, a registered model as arguments'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    source_type := clip_search_internal.column_type(TG_RELID::regclass, source_column, 'clip_embed_trigger');
    PERFORM clip_search_internal.column_type(TG_RELID::regclass, target_column, 'clip_embed_trigger');
    IF TG_OP = 'UPDATE' THEN
        EXECUTE format('SELECT ($1).%1$I IS NOT DISTINCT FROM ($2).%1$I', source_column) INTO unchanged USING NEW, OLD;
        IF unchanged THEN
            RETURN NEW;
        END IF;
    END IF;
    EXECUTE format('SELECT %s::text',
                   clip_search_internal.embed_call(source_type, 'clip_embed_trigger', false,
                                                   format('($1).%I', source_column), model))
        INTO embedding USING NEW;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(target_column, embedding));
END
$function$;

-- The type of a table's column, or an error that names the caller.
CREATE FUNCTION clip_search_internal.column_type(relation regclass, column_name text, caller text) RETURNS regtype
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    column_type regtype;
BEGIN
    SELECT atttypid::regtype INTO column_type FROM pg_attribute
    WHERE attrelid = relation AND attname = column_name AND attnum > 0 AND NOT attisdropped;
    IF column_type IS NULL THEN
        RAISE EXCEPTION '%: column "%" does not exist in %', caller, column_name, relation
            USING ERRCODE = 'undefined_column';
    END IF;
    RETURN column_type;
END
$function$;

-- An error unless the procedure caller, which calls it, may COMMIT (src/auto_embed.rs).
CREATE FUNCTION clip_search_internal.require_own_transaction(caller text) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'require_own_transaction_wrapper';

-- An error unless a vector column of a fixed dimension (vector(512), halfvec(512)) has the dimension of model (a
-- registered model's name; NULL: the functions' default): pgvector would refuse each row, deep in the embedding
-- statement's context. Without a model there is nothing to compare with; embedding then reports that itself.
CREATE FUNCTION clip_search_internal.check_dimension(relation regclass, column_name text, caller text, model text)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    declared integer;
    info     jsonb;
BEGIN
    SELECT a.atttypmod INTO declared FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = relation AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped
      AND t.typname IN ('vector', 'halfvec') AND a.atttypmod > 0;
    IF declared IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        info := CASE WHEN model IS NULL THEN @extschema@.clip_info() ELSE @extschema@.clip_info(model::name) END;
    EXCEPTION WHEN OTHERS THEN
        RETURN;
    END;
    IF declared <> (info->>'embed_dim')::integer THEN
        RAISE EXCEPTION '%: column "%" of % holds vectors of % dimensions, and the model % makes vectors of %',
                caller, column_name, relation, declared, info->>'model', info->>'embed_dim'
            USING ERRCODE = 'datatype_mismatch',
                  HINT = format('Embed into a column of type vector(%s), or with the model the column was made for.',
                                info->>'embed_dim');
    END IF;
END
$function$;

-- A trigger's arguments, as pg_trigger.tgargs holds them: each in the database's encoding, ended by a zero byte.
CREATE FUNCTION clip_search_internal.trigger_arguments(arguments bytea) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    result text[] := '{}';
    rest   bytea := arguments;
    ends   integer;
BEGIN
    LOOP
        ends := position('\x00'::bytea IN rest);
        EXIT WHEN ends = 0;
        result := result || convert_from(substring(rest FROM 1 FOR ends - 1), current_setting('server_encoding'));
        rest := substring(rest FROM ends + 1);
    END LOOP;
    RETURN result;
END
$function$;

-- Whether text can be a model's name: 1 to 62 letters, digits, ".", "_" or "-", starting with a letter or digit. At
-- most 62 bytes: a longer argument of type name is cut to 63, and must not become another model's name.
CREATE FUNCTION clip_search_internal.is_model_name(model text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT model ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,61}$'
$function$;

-- An error unless model is NULL (the functions' default) or a registered model's name.
CREATE FUNCTION clip_search_internal.check_model(model text, caller text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    IF model IS NOT NULL AND NOT EXISTS (SELECT FROM clip_search_internal.models m
                                         WHERE m.name = model AND m.unregistered_at IS NULL) THEN
        RAISE EXCEPTION '%: model "%" is not registered in this database', caller, model
            USING ERRCODE = 'undefined_object',
                  HINT = 'clip_models lists the registered models; a superuser registers one with clip_register_model(name, directory).';
    END IF;
END
$function$;

-- The array functions for the batches of clip_backfill and the workers: clip_embed_texts and clip_embed_images
-- (model NULL: the functions' default), run on clip.execution_provider (src/embed.rs). Not in parallel workers,
-- which would each load the model on the GPU.
CREATE FUNCTION clip_search_internal.embed_texts_bulk(inputs text[], model name) RETURNS vector[]
LANGUAGE c STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'embed_texts_bulk_wrapper';
CREATE FUNCTION clip_search_internal.embed_images_bulk(inputs bytea[], model name) RETURNS vector[]
LANGUAGE c STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'embed_images_bulk_wrapper';

-- The call of the embedding function that serves a source column type, the single or the array form, on the SQL
-- expression argument, with model (a registered model's name) when it is not NULL. The argument is cast to the
-- function's exact parameter type, named with its schema: a varchar column then calls the text function itself,
-- not an overload for varchar that a user could add to the extension's schema, whatever the search_path.
CREATE FUNCTION clip_search_internal.embed_call(source_type regtype, caller text, batched boolean, argument text,
    model text) RETURNS text LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    model_argument text := CASE WHEN model IS NOT NULL THEN format(', model => %L::pg_catalog.name', model) ELSE '' END;
    bulk_model     text := format('%L::pg_catalog.name', model);  -- NULL::pg_catalog.name for the default
BEGIN
    -- Only a name a model can have: a longer one would be cut to another name by the cast.
    IF NOT clip_search_internal.is_model_name(model) THEN
        RAISE EXCEPTION '%: % is not a model name', caller, quote_literal(model) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF source_type IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
        RETURN CASE WHEN batched
                    THEN format('clip_search_internal.embed_texts_bulk((%s)::pg_catalog.text[], %s)', argument, bulk_model)
                    ELSE format('@extschema@.clip_embed_text((%s)::pg_catalog.text%s)', argument, model_argument) END;
    ELSIF source_type = 'bytea'::regtype THEN
        RETURN CASE WHEN batched
                    THEN format('clip_search_internal.embed_images_bulk((%s)::pg_catalog.bytea[], %s)', argument, bulk_model)
                    ELSE format('@extschema@.clip_embed_image((%s)::pg_catalog.bytea%s)', argument, model_argument) END;
    END IF;
    RAISE EXCEPTION '%: cannot embed a column of type % (text, varchar or bytea)', caller, source_type
        USING ERRCODE = 'datatype_mismatch';
END
$function$;

-- Rows that clip_backfill(..., on_error => 'skip') could not embed, one per row and source column. Later calls
-- leave such a row out while its source stays the same (source_md5) and its target NULL; each call first removes
-- the records of its table whose row changed, was embedded or is gone, so a fixed row is embedded again. Each role
-- sees the records of the tables it may read and writes those of the tables it may update (row-level security).
CREATE TABLE @extschema@.clip_backfill_failures (
    relation      regclass    NOT NULL,  -- the table clip_backfill was called on
    source_column text        NOT NULL,
    row_table     regclass    NOT NULL,  -- the table holding the row: the same, a partition, or an inheriting table
    row_key       jsonb       NOT NULL,  -- the row's primary key, or {"ctid": ...} in a table without one
    source_md5    text        NOT NULL,
    sqlstate      text        NOT NULL,
    message       text        NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (relation, source_column, row_table, row_key)
);
ALTER TABLE @extschema@.clip_backfill_failures ENABLE ROW LEVEL SECURITY;
-- Column privileges count: a role granted UPDATE on the target column only may backfill it. (Policy expressions
-- are bound when the policy is created: every name in them is qualified.)
CREATE POLICY readers ON @extschema@.clip_backfill_failures FOR SELECT
    USING (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'SELECT'));
CREATE POLICY backfillers ON @extschema@.clip_backfill_failures
    USING (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'UPDATE'))
    WITH CHECK (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'UPDATE'));
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.clip_backfill_failures TO PUBLIC;

-- A table's name qualified with its schema, for statements that run under another role's search_path.
CREATE FUNCTION clip_search_internal.qualified_table(relation regclass) RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $function$
    SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = relation
$function$;

-- A type's name qualified with its schema, likewise.
CREATE FUNCTION clip_search_internal.qualified_type(of_type regtype) RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $function$
    SELECT format('%I.%I', n.nspname, t.typname) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE t.oid = of_type
$function$;

-- One batch of clip_backfill and of the background worker's watches (sql/watch.sql): locks up to batch_size rows of
-- target_table (partitions and inheriting tables included) whose target is NULL, whose source is not, and which are
-- not a recorded failure with their current source, and embeds them in one array call. If a source in the batch
-- cannot be embedded, the rows are embedded one by one: with on_error => 'skip' the bad ones are recorded in
-- clip_backfill_failures; with 'stop' the first bad one ends the batch and is returned in failed_* (the rows before
-- it stay embedded, for the caller to commit). done = 0 and skipped = 0 without a failure: nothing is left to do.
-- The updates of target_table run with search_path table_search_path, which its triggers see. model: a registered
-- model's name, or NULL for the functions' default.
CREATE FUNCTION clip_search_internal.embed_batch(target_table regclass, source_column text, target_column text,
    batch_size integer, on_error text, table_search_path text, model text, OUT done bigint, OUT skipped bigint,
    OUT failed_table regclass, OUT failed_key jsonb, OUT failed_state text, OUT failed_message text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    source_type    regtype;
    target_type    regtype;
    row_key        text;     -- SQL expression of the row t's key: its primary key, else its ctid
    row_tables     oid[];    -- the batch's rows: (tableoid, ctid) is unique across partitions, ctid alone is not
    row_ids        tid[];
    row_table      oid;
    row_id         tid;
    embedding      text;
    failed_md5     text;
    update_batch   text;     -- the statement that embeds the batch
    update_row     text;     -- the statement that stores one row's embedding
BEGIN
    done := 0;
    skipped := 0;
    source_type := clip_search_internal.column_type(target_table, source_column, 'clip_backfill');
    target_type := clip_search_internal.column_type(target_table, target_column, 'clip_backfill');
    row_key := clip_search_internal.row_key(target_table);
    -- Lock a batch in the caller's transaction: the locks outlive a failed subtransaction below, so no concurrent
    -- call takes these rows while this one embeds them row by row.
    EXECUTE format($sql$
        SELECT coalesce(array_agg(tableoid), '{}'), coalesce(array_agg(ctid), '{}') FROM (
            SELECT t.tableoid, t.ctid FROM %1$s t
            WHERE t.%3$I IS NULL AND t.%2$I IS NOT NULL
              AND NOT EXISTS (SELECT FROM @extschema@.clip_backfill_failures f
                              WHERE f.relation = %4$L::regclass AND f.source_column = %2$L AND f.row_table = t.tableoid
                                AND f.row_key = %5$s AND f.source_md5 = md5(t.%2$I))
            LIMIT %6$s FOR UPDATE OF t SKIP LOCKED
        ) batch
    $sql$, target_table, source_column, target_column, target_table::oid, row_key, batch_size)
        INTO row_tables, row_ids;
    IF cardinality(row_ids) = 0 THEN
        RETURN;
    END IF;
    -- The updates, written here with every name qualified, then run under table_search_path: between the two
    -- set_config calls nothing but them is evaluated.
    update_batch := format($sql$
        WITH batch AS (
            SELECT t.tableoid AS row_table, t.ctid AS row_id, t.%2$I AS source
            FROM %1$s t JOIN ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS b(row_table, row_id)
                ON t.tableoid OPERATOR(pg_catalog.=) b.row_table AND t.ctid OPERATOR(pg_catalog.=) b.row_id
        ), embedded AS (
            SELECT pg_catalog.array_agg(row_table) AS row_tables, pg_catalog.array_agg(row_id) AS row_ids,
                   %4$s AS embeddings
            FROM batch
        )
        UPDATE %1$s AS t SET %3$I = e.embedding
        FROM embedded, ROWS FROM (pg_catalog.unnest(embedded.row_tables), pg_catalog.unnest(embedded.row_ids),
                                  pg_catalog.unnest(embedded.embeddings)) AS e(row_table, row_id, embedding)
        WHERE t.tableoid OPERATOR(pg_catalog.=) e.row_table AND t.ctid OPERATOR(pg_catalog.=) e.row_id
    $sql$, clip_search_internal.qualified_table(target_table), source_column, target_column,
           clip_search_internal.embed_call(source_type, 'clip_backfill', true, 'pg_catalog.array_agg(source)', model));
    update_row := format('UPDATE %s t SET %I = $3::%s
                          WHERE t.tableoid OPERATOR(pg_catalog.=) $1 AND t.ctid OPERATOR(pg_catalog.=) $2',
                         clip_search_internal.qualified_table(target_table), target_column,
                         clip_search_internal.qualified_type(target_type));
    BEGIN
        -- One array call per batch: one batched inference instead of batch_size single ones. The three aggregates
        -- see the rows in the same order, so rows and embeddings pair up.
        PERFORM pg_catalog.set_config('search_path', table_search_path, true);
        EXECUTE update_batch USING row_tables, row_ids;
        GET DIAGNOSTICS done = ROW_COUNT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    EXCEPTION WHEN data_exception OR feature_not_supported OR program_limit_exceeded THEN
        -- A source in the batch cannot be embedded: embed the rows one by one to find which. Only the embedding is
        -- inside the subtransaction, so an error of the UPDATE itself (say, a vector column of another dimension)
        -- is not taken for a bad row.
        done := 0;
        FOR i IN 1 .. cardinality(row_ids) LOOP
            BEGIN
                EXECUTE format('SELECT %s::text FROM %s t WHERE t.tableoid = $1 AND t.ctid = $2',
                               clip_search_internal.embed_call(source_type, 'clip_backfill', false,
                                                               format('t.%I', source_column), model),
                               target_table)
                    INTO embedding USING row_tables[i], row_ids[i];
            EXCEPTION WHEN data_exception OR feature_not_supported OR program_limit_exceeded THEN
                GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
                EXECUTE format('SELECT %s, md5(t.%I) FROM %s t WHERE t.tableoid = $1 AND t.ctid = $2',
                               row_key, source_column, target_table)
                    INTO failed_key, failed_md5 USING row_tables[i], row_ids[i];
                IF on_error = 'stop' THEN
                    failed_table := row_tables[i];
                    RETURN;
                END IF;
                INSERT INTO @extschema@.clip_backfill_failures AS f
                    (relation, source_column, row_table, row_key, source_md5, sqlstate, message)
                VALUES (target_table, source_column, row_tables[i], failed_key, failed_md5, failed_state, failed_message)
                ON CONFLICT ON CONSTRAINT clip_backfill_failures_pkey DO UPDATE
                    SET source_md5 = excluded.source_md5, sqlstate = excluded.sqlstate, message = excluded.message,
                        failed_at = excluded.failed_at;
                skipped := skipped + 1;
                CONTINUE;
            END;
            row_table := row_tables[i];
            row_id := row_ids[i];
            PERFORM pg_catalog.set_config('search_path', table_search_path, true);
            EXECUTE update_row USING row_table, row_id, embedding;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            done := done + 1;
        END LOOP;
        failed_key := NULL;
        failed_state := NULL;
        failed_message := NULL;
    END;
END
$function$;

-- SQL expression of the key of a row t of relation: its primary key as jsonb, else {"ctid": ...}.
CREATE FUNCTION clip_search_internal.row_key(relation regclass) RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce(
        (SELECT 'jsonb_build_object(' || string_agg(format('%L, t.%I', a.attname, a.attname), ', ' ORDER BY k.n) || ')'
         FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = relation AND i.indisprimary),
        'jsonb_build_object(''ctid'', t.ctid)')
$function$;

-- Removes the records of clip_backfill_failures of relation's source column whose row changed, was embedded or is
-- gone, so that the row is tried again, and the records of relation under a name that is no longer a column of it
-- (a column renamed or dropped since).
CREATE FUNCTION clip_search_internal.forget_stale_failures(relation regclass, source_column text, target_column text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    DELETE FROM @extschema@.clip_backfill_failures f
    WHERE f.relation = forget_stale_failures.relation
      AND NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = f.relation AND a.attname = f.source_column
                                                   AND a.attnum > 0 AND NOT a.attisdropped);
    IF NOT EXISTS (SELECT FROM @extschema@.clip_backfill_failures f
                   WHERE f.relation = forget_stale_failures.relation
                     AND f.source_column = forget_stale_failures.source_column) THEN
        RETURN;
    END IF;
    EXECUTE format('DELETE FROM @extschema@.clip_backfill_failures f WHERE f.relation = $1 AND f.source_column = $2
                        AND NOT EXISTS (SELECT FROM %s t WHERE t.%I IS NULL AND f.row_table = t.tableoid
                                        AND f.row_key = %s AND f.source_md5 = md5(t.%I))',
                   relation, target_column, clip_search_internal.row_key(relation), source_column)
        USING relation, source_column;
END
$function$;

-- Where a clip_backfill call stands: its arguments, the rows it has embedded and skipped, and how its last batch
-- ended. Handed from one of the functions below to the next by the procedure.
CREATE TYPE clip_search_internal.backfill_progress AS (
    target_table   regclass,
    source_column  text,
    target_column  text,
    batch_size     integer,
    on_error       text,
    search_path    text,         -- the caller's, under which the table's triggers run
    total          bigint,       -- rows to embed when the call started
    done           bigint,
    skipped        bigint,
    started        timestamptz,
    finished       boolean,      -- no row is left to embed
    failed_table   regclass,     -- the row that ended the call (on_error => 'stop'), if one did
    failed_key     jsonb,
    failed_state   text,
    failed_message text,
    model          text          -- a registered model's name; NULL: the functions' default
);

-- clip_backfill's start: checks the arguments, forgets stale failures, counts the rows to embed and says so.
CREATE FUNCTION clip_search_internal.backfill_start(target_table regclass, source_column text, target_column text,
    batch_size integer, on_error text, caller_search_path text, model text) RETURNS clip_search_internal.backfill_progress
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
    PERFORM clip_search_internal.check_model(model, 'clip_backfill');
    PERFORM clip_search_internal.embed_call(
        clip_search_internal.column_type(target_table, source_column, 'clip_backfill'), 'clip_backfill', true, '',
        model);
    PERFORM clip_search_internal.column_type(target_table, target_column, 'clip_backfill');
    PERFORM clip_search_internal.check_dimension(target_table, target_column, 'clip_backfill', model);
    PERFORM clip_search_internal.forget_stale_failures(target_table, source_column, target_column);
    SELECT count(*) INTO recorded FROM @extschema@.clip_backfill_failures f
    WHERE f.relation = target_table AND f.source_column = backfill_start.source_column;
    progress := ROW(target_table, source_column, target_column, batch_size, on_error, caller_search_path, 0, 0, 0,
                    clock_timestamp(), false, NULL, NULL, NULL, NULL, model);
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

-- One batch of clip_backfill, added to its progress; at the end, the warning about rows left out.
CREATE FUNCTION clip_search_internal.backfill_batch(progress clip_search_internal.backfill_progress)
RETURNS clip_search_internal.backfill_progress
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    batch record;
BEGIN
    SELECT * INTO batch FROM clip_search_internal.embed_batch(progress.target_table, progress.source_column,
        progress.target_column, progress.batch_size, progress.on_error, progress.search_path, progress.model);
    progress.done := progress.done + batch.done;
    progress.skipped := progress.skipped + batch.skipped;
    progress.failed_table := batch.failed_table;
    progress.failed_key := batch.failed_key;
    progress.failed_state := batch.failed_state;
    progress.failed_message := batch.failed_message;
    progress.finished := batch.done = 0 AND batch.skipped = 0 AND batch.failed_table IS NULL;
    IF progress.finished AND progress.skipped > 0 THEN
        RAISE WARNING 'clip_backfill: % rows of % could not be embedded and were left out', progress.skipped, progress.target_table
            USING HINT = 'SELECT * FROM clip_backfill_failures shows them and why; fix their sources and call clip_backfill again.';
    END IF;
    RETURN progress;
END
$function$;

-- After a batch of clip_backfill is committed: the error that names a row it could not embed (on_error => 'stop'),
-- or the progress as a NOTICE.
CREATE FUNCTION clip_search_internal.backfill_report(progress clip_search_internal.backfill_progress) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    seconds double precision := extract(epoch FROM clock_timestamp() - progress.started);
BEGIN
    IF progress.failed_table IS NOT NULL THEN
        RAISE EXCEPTION 'clip_backfill: cannot embed the row % of %: %', progress.failed_key, progress.failed_table,
                progress.failed_message
            USING ERRCODE = progress.failed_state,
                  HINT = 'Fix or clear its source and call clip_backfill again, or call it with on_error => ''skip'' to record such rows in clip_backfill_failures and go on.';
    END IF;
    RAISE NOTICE 'clip_backfill: % of % rows embedded', progress.done, progress.total
        USING DETAIL = format('%s rows/s since the start of this call', round((progress.done / greatest(seconds, 1e-6))::numeric, 1));
END
$function$;

-- Embeds the rows of an existing table (partitions and inheriting tables included) whose target is NULL and whose
-- source is not, batch_size rows at a time, committing after each batch and reporting progress as NOTICEs.
-- Interrupted (cancelled, failed, server stopped), it keeps what it committed; CALL it again to resume: nothing is
-- embedded twice, nothing is missed. Concurrent calls share the work (SKIP LOCKED). A row whose source cannot be
-- embedded stops the call with an error that names the row's key (on_error => 'stop'), or is recorded in
-- clip_backfill_failures and left out (on_error => 'skip'). Must be CALLed as a statement of its own (in
-- autocommit mode, outside BEGIN ... COMMIT): it says so before it starts otherwise. With model (a registered
-- model's name), it embeds with that model; without, with the functions' default.
-- The body names only functions with their schema, and uses no operator: see the top of this file.
CREATE PROCEDURE @extschema@.clip_backfill(target_table regclass, source_column text, target_column text,
                                           batch_size integer DEFAULT 64, on_error text DEFAULT 'stop',
                                           model text DEFAULT NULL)
LANGUAGE plpgsql AS $procedure$
DECLARE
    progress clip_search_internal.backfill_progress;
BEGIN
    PERFORM clip_search_internal.require_own_transaction('clip_backfill');
    progress := clip_search_internal.backfill_start(target_table, source_column, target_column, batch_size, on_error,
                                                    pg_catalog.current_setting('search_path'::pg_catalog.text), model);
    LOOP
        progress := clip_search_internal.backfill_batch(progress);
        EXIT WHEN progress.finished;
        COMMIT;
        PERFORM clip_search_internal.backfill_report(progress);
    END LOOP;
END
$procedure$;
