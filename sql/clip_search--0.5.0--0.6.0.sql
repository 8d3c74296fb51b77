-- clip_search 0.5.0 -> 0.6.0: a model registry (clip_register_model, clip_unregister_model, clip_models), a model
-- argument, `model => 'name'`, on every function that embeds, compares, classifies or tokenizes, on clip_info, on
-- clip_backfill and clip_watch, and as clip_embed_trigger's third argument; clip_clean_weights_cache. The model of
-- clip.model_dir, when one is configured, is registered under its manifest's name.
-- The definitions below repeat sql/auto_embed.sql, sql/watch.sql, sql/models.sql, sql/comments.sql and pgrx's
-- declarations of the C functions (tests/pg_regress/sql/upgrade.sql compares an upgraded extension with a fresh
-- install).
\echo Use "ALTER EXTENSION clip_search UPDATE TO '0.6.0'" to load this file. \quit

-- Triggers, clip_backfill and watches take a registered model. The helpers whose arguments changed are replaced,
-- the progress type and the watches gain the model, and clip_backfill and clip_watch are created again with their
-- EXECUTE privileges carried over.
DROP FUNCTION clip_search_internal.embed_call(regtype, text, boolean, text);
DROP FUNCTION clip_search_internal.check_dimension(regclass, text, text);
DROP FUNCTION clip_search_internal.embed_batch(regclass, text, text, integer, text, text);
DROP FUNCTION clip_search_internal.backfill_start(regclass, text, text, integer, text, text);
ALTER TYPE clip_search_internal.backfill_progress ADD ATTRIBUTE model text;

-- Fills TG_ARGV[1] (a vector column) from TG_ARGV[0] (a text, varchar or bytea column) with the text or the
-- image tower, chosen by the source column's type, of the registered model TG_ARGV[2] (the functions' default
-- without it):
--   CREATE TRIGGER photos_embed BEFORE INSERT OR UPDATE OF image ON photos
--       FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('image', 'embedding');
-- On UPDATE it re-embeds only when the source changed. A failing embedding aborts the statement.
CREATE OR REPLACE FUNCTION @extschema@.clip_embed_trigger() RETURNS trigger LANGUAGE plpgsql
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

ALTER TABLE clip_search_internal.watches ADD COLUMN model text CHECK (clip_search_internal.is_model_name(model));
GRANT INSERT (model) ON clip_search_internal.watches TO PUBLIC;

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
CREATE OR REPLACE FUNCTION clip_search_internal.backfill_batch(progress clip_search_internal.backfill_progress)
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

-- A watch per target column: the watches' key, and each watch's trigger named after its column.
ALTER TABLE clip_search_internal.watches DROP CONSTRAINT watches_pkey, ADD PRIMARY KEY (relation, target_attnum);

-- Migrations of a table's embeddings to another model (sql/migrate.sql): the watch of a new column, which
-- clip_migrate_switch swaps in for the target column. At most one per table.
CREATE TABLE clip_search_internal.migrations (
    relation      regclass    PRIMARY KEY,
    source_attnum smallint    NOT NULL,
    target_attnum smallint    NOT NULL,  -- the column queries use, which takes the new embeddings at the switch
    new_attnum    smallint    NOT NULL,  -- the column the worker fills: a watch's target
    model         text        NOT NULL CHECK (clip_search_internal.is_model_name(model)),
    started_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Whether a watch is a migration's, which clip_unwatch leaves to clip_migrate_cancel.
CREATE FUNCTION clip_search_internal.is_migration_watch(watch clip_search_internal.watches) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT EXISTS (SELECT FROM clip_search_internal.migrations m
                   WHERE m.relation = watch.relation AND m.new_attnum = watch.target_attnum)
$function$;

-- Whether relation is a plain or a partitioned table.
CREATE OR REPLACE FUNCTION clip_search_internal.is_table(relation regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce((SELECT c.relkind IN ('r', 'p') FROM pg_class c WHERE c.oid = relation), false)
$function$;

-- Whether the current role has the rights of relation's owner: whose watches and migrations it may make and end.
CREATE OR REPLACE FUNCTION clip_search_internal.owns(relation regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = relation), 'USAGE')
$function$;

-- The name of a column of relation, by attribute number; NULL if there is none (dropped, or the table is gone).
CREATE OR REPLACE FUNCTION clip_search_internal.column_name(relation regclass, attnum smallint) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT a.attname::text FROM pg_attribute a
    WHERE a.attrelid = relation AND a.attnum = column_name.attnum AND a.attnum > 0 AND NOT a.attisdropped
$function$;

-- The attribute number of a column of relation, or an error that names the caller.
CREATE OR REPLACE FUNCTION clip_search_internal.column_attnum(relation regclass, column_name text, caller text) RETURNS smallint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    number smallint;
BEGIN
    SELECT a.attnum INTO number FROM pg_attribute a
    WHERE a.attrelid = relation AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped;
    IF number IS NULL THEN
        RAISE EXCEPTION '%: column "%" does not exist in %', caller, column_name, relation
            USING ERRCODE = 'undefined_column';
    END IF;
    RETURN number;
END
$function$;

-- Clears the target (attribute number TG_ARGV[0] of the watched table) of a watched row whose source an UPDATE
-- changed, so the worker embeds it again. The trigger's WHEN clause compares the source. On a partition the
-- trigger is a clone of the watched table's, and the partition's attribute numbers may differ from the watched
-- table's (a column dropped from it before it was attached): the column is found by its name in the watched table,
-- the table of the trigger's topmost parent. A target column dropped since leaves the row as it is (the watch is
-- broken, and clip_watch_status says so).
CREATE OR REPLACE FUNCTION clip_search_internal.watch_trigger() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    watched       oid;
    target_column text;
BEGIN
    WITH RECURSIVE ancestors AS (
        SELECT t.tgrelid, t.tgparentid FROM pg_trigger t WHERE t.tgrelid = TG_RELID AND t.tgname = TG_NAME
        UNION ALL
        SELECT t.tgrelid, t.tgparentid FROM pg_trigger t JOIN ancestors a ON t.oid = a.tgparentid
    )
    SELECT a.tgrelid INTO watched FROM ancestors a WHERE a.tgparentid = 0;
    target_column := clip_search_internal.column_name(watched::regclass, TG_ARGV[0]::smallint);
    IF target_column IS NULL THEN
        RETURN NEW;
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(target_column, NULL));
END
$function$;

-- The name of the trigger of the watch of a table's column target_attnum: by number, so that it follows a rename.
CREATE OR REPLACE FUNCTION clip_search_internal.watch_trigger_name(target_attnum smallint) RETURNS name
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT ('clip_watch_' || target_attnum)::name
$function$;

-- Makes the trigger of a watch: BEFORE UPDATE OF the source, when it changed. PostgreSQL keeps the column list and
-- the WHEN clause by attribute number, so both follow a rename.
CREATE OR REPLACE FUNCTION clip_search_internal.create_watch_trigger(relation regclass, source_attnum smallint,
    target_attnum smallint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    source_column text := clip_search_internal.column_name(relation, source_attnum);
BEGIN
    EXECUTE format('CREATE TRIGGER %4$I BEFORE UPDATE OF %1$I ON %2$s FOR EACH ROW
                    WHEN (OLD.%1$I IS DISTINCT FROM NEW.%1$I)
                    EXECUTE FUNCTION clip_search_internal.watch_trigger(%3$L)',
                   source_column, relation, target_attnum,
                   clip_search_internal.watch_trigger_name(target_attnum));
END
$function$;

-- An error unless the current role has the rights of relation's owner.
CREATE OR REPLACE FUNCTION clip_search_internal.check_owner(relation regclass, caller text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    IF NOT clip_search_internal.owns(relation) THEN
        RAISE EXCEPTION '%: must be the owner of table %', caller, relation USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$function$;

-- A name for the partial index that finds the due rows of a watch of a table's target_column, free in the table's
-- schema: <table>_<column>_clip_pending, cut to 63 bytes as PostgreSQL would cut it but keeping the suffix, and
-- numbered when another relation has the name.
CREATE OR REPLACE FUNCTION clip_search_internal.pending_index_name(relation regclass, target_column text) RETURNS name
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    base      text := format('%s_%s', (SELECT relname FROM pg_class WHERE oid = relation), target_column);
    suffix    text := '_clip_pending';
    candidate text;
    number    integer := 1;
BEGIN
    LOOP
        candidate := base || suffix;
        WHILE octet_length(candidate) > 63 LOOP
            base := left(base, -1);
            candidate := base || suffix;
        END LOOP;
        EXIT WHEN NOT EXISTS (SELECT FROM pg_class c WHERE c.relname = candidate
                              AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = relation));
        number := number + 1;
        suffix := '_clip_pending' || number;
    END LOOP;
    RETURN candidate;
END
$function$;

-- Starts a watch of target_column (see clip_watch) for caller: checks the columns, the model and the table, makes
-- the trigger and the partial index, and records the watch.
CREATE OR REPLACE FUNCTION clip_search_internal.start_watch(target_table regclass, source_column text, target_column text,
    model text, caller text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    index_name    name := clip_search_internal.pending_index_name(target_table, target_column);
    index_oid     regclass;
    source_number smallint;
    target_number smallint;
BEGIN
    PERFORM clip_search_internal.check_owner(target_table, caller);
    PERFORM clip_search_internal.check_model(model, caller);
    PERFORM clip_search_internal.embed_call(
        clip_search_internal.column_type(target_table, source_column, caller), caller, true, '', model);
    PERFORM clip_search_internal.column_type(target_table, target_column, caller);
    PERFORM clip_search_internal.check_dimension(target_table, target_column, caller, model);
    source_number := clip_search_internal.column_attnum(target_table, source_column, caller);
    target_number := clip_search_internal.column_attnum(target_table, target_column, caller);
    IF EXISTS (SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = target_table AND NOT c.relispartition) THEN
        RAISE EXCEPTION '%: % has inheriting tables, whose updates a trigger on it would not see',
            caller, target_table USING ERRCODE = 'feature_not_supported',
            HINT = 'Watch each of the tables, or make it a partitioned table.';
    END IF;
    IF EXISTS (SELECT FROM clip_search_internal.watches w
               WHERE w.relation = target_table AND w.target_attnum = target_number) THEN
        RAISE EXCEPTION '%: column "%" of % is watched already', caller, target_column, target_table
            USING ERRCODE = 'duplicate_object', HINT = 'clip_unwatch the table first to watch the column again.';
    END IF;
    PERFORM clip_search_internal.create_watch_trigger(target_table, source_number, target_number);
    EXECUTE format('CREATE INDEX %I ON %s ((%I IS NULL)) WHERE %I IS NULL',
                   index_name, target_table, target_column, target_column);
    SELECT c.oid INTO index_oid FROM pg_class c
    WHERE c.relname = index_name AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = target_table);
    INSERT INTO clip_search_internal.watches (relation, source_attnum, target_attnum, pending_index, model)
    VALUES (target_table, source_number, target_number, index_oid, model);
    IF NOT clip_search_internal.worker_configured() THEN
        RAISE WARNING '%: no background worker embeds the watched columns of database %', caller, current_database()
            USING DETAIL = 'The watch is recorded, and rows will wait with a NULL embedding until a worker runs.',
                  HINT = format('In postgresql.conf, add clip_search to shared_preload_libraries and %s to clip.worker_databases, then restart the server. Meanwhile CALL clip_backfill(...) embeds the rows.',
                                current_database());
    END IF;
END
$function$;

-- Ends a watch: removes its trigger, the partial index it made, and its row. Embeddings stay.
CREATE OR REPLACE FUNCTION clip_search_internal.stop_watch(watch clip_search_internal.watches) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    -- The table first: a batch of the worker holds a lock on it until it has updated the watch's row.
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', watch.relation);
    DELETE FROM clip_search_internal.watches w
    WHERE w.relation = watch.relation AND w.target_attnum = watch.target_attnum;
    -- The trigger is gone if its source column was dropped; the index if its target column was.
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s',
                   clip_search_internal.watch_trigger_name(watch.target_attnum), watch.relation);
    -- Only an index of this table: a watch's row inserted by hand may name any index.
    IF EXISTS (SELECT FROM pg_index WHERE indexrelid = watch.pending_index AND indrelid = watch.relation) THEN
        EXECUTE format('DROP INDEX %s', watch.pending_index);
    END IF;
END
$function$;

-- Stops watching target_table: removes the triggers and the partial indexes clip_watch made, for each watched
-- column but a migration's (clip_migrate_cancel ends those). Embeddings stay.
CREATE OR REPLACE FUNCTION @extschema@.clip_unwatch(target_table regclass) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    watch clip_search_internal.watches;
    found boolean := false;
BEGIN
    PERFORM clip_search_internal.check_owner(target_table, 'clip_unwatch');
    FOR watch IN SELECT * FROM clip_search_internal.watches w
                 WHERE w.relation = target_table AND NOT clip_search_internal.is_migration_watch(w)
                 ORDER BY w.target_attnum
    LOOP
        PERFORM clip_search_internal.stop_watch(watch);
        found := true;
    END LOOP;
    IF NOT found THEN
        RAISE EXCEPTION 'clip_unwatch: % is not watched', target_table USING ERRCODE = 'undefined_object';
    END IF;
END
$function$;

-- One batch of a watch, run by the worker as the table's owner: embeds up to batch_size due rows, records those that
-- cannot be embedded, and returns how many it embedded and skipped; any other error (a column dropped, the model
-- missing) is returned, not raised, so the worker can record it and go on with the other watches.
CREATE OR REPLACE FUNCTION clip_search_internal.watch_batch(target_table regclass, source_attnum smallint,
    target_attnum smallint, batch_size integer, OUT done bigint, OUT skipped bigint, OUT error text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    source_column text := clip_search_internal.column_name(target_table, source_attnum);
    target_column text := clip_search_internal.column_name(target_table, target_attnum);
    model         text;
BEGIN
    done := 0;
    skipped := 0;
    -- A watch that ended since the worker listed the watches (a switch ends one) has nothing to do.
    SELECT w.model INTO model FROM clip_search_internal.watches w
    WHERE w.relation = target_table AND w.target_attnum = watch_batch.target_attnum;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF source_column IS NULL OR target_column IS NULL THEN
        error := format('42703 the %s column of the watch was dropped from %s',
                        CASE WHEN source_column IS NULL THEN 'source' ELSE 'target' END, target_table);
        RETURN;
    END IF;
    PERFORM clip_search_internal.forget_stale_failures(target_table, source_column, target_column);
    -- The table's triggers see the server's default search_path, as in any session of its owner without settings.
    SELECT b.done, b.skipped INTO done, skipped
    FROM clip_search_internal.embed_batch(target_table, source_column, target_column, batch_size, 'skip',
                                          (SELECT s.boot_val FROM pg_settings s WHERE s.name = 'search_path'),
                                          model) b;
EXCEPTION WHEN OTHERS THEN
    done := 0;
    skipped := 0;
    error := SQLSTATE || ' ' || SQLERRM;
END
$function$;

-- A watch's progress, if the current role may read its table: rows due, embedded and failed, the rate of the last
-- batch, the last error, and the worker's state. No row for a table dropped since (the worker skips it); a watch
-- whose column was dropped shows NULL for that column's name and the counts rather than failing.
CREATE OR REPLACE FUNCTION clip_search_internal.watch_status(w clip_search_internal.watches,
    OUT source_column text, OUT target_column text, OUT rows_pending bigint, OUT rows_embedded bigint,
    OUT rows_failed bigint, OUT rows_embedded_by_worker bigint, OUT last_batch_rows_per_s numeric,
    OUT last_batch_at timestamptz, OUT last_error text, OUT last_error_at timestamptz, OUT worker_state text)
RETURNS SETOF record LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    pending bigint;
BEGIN
    IF NOT clip_search_internal.is_table(w.relation) OR NOT has_table_privilege(w.relation, 'SELECT') THEN
        RETURN;
    END IF;
    source_column := clip_search_internal.column_name(w.relation, w.source_attnum);
    target_column := clip_search_internal.column_name(w.relation, w.target_attnum);
    IF source_column IS NOT NULL AND target_column IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FILTER (WHERE %2$I IS NULL AND %1$I IS NOT NULL), count(%2$I) FROM %3$s',
                       source_column, target_column, w.relation)
            INTO pending, rows_embedded;
        SELECT count(*) INTO rows_failed FROM @extschema@.clip_backfill_failures f
        WHERE f.relation = w.relation AND f.source_column = watch_status.source_column;
        rows_pending := greatest(pending - rows_failed, 0);
    END IF;
    rows_embedded_by_worker := w.rows_embedded;
    last_batch_rows_per_s := round(w.last_batch_rate::numeric, 1);
    last_batch_at := w.last_batch_at;
    last_error := w.last_error;
    last_error_at := w.last_error_at;
    worker_state := clip_search_internal.worker_state();
    RETURN NEXT;
END
$function$;

ALTER POLICY readers ON clip_search_internal.watches
    USING (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'SELECT'));
-- A row names a plain or partitioned table: status and switches read the relation as the role that asks, and a
-- view or a foreign table would run its owner's code as that role.
ALTER POLICY owners ON clip_search_internal.watches
    USING (clip_search_internal.owns(relation))
    WITH CHECK (clip_search_internal.owns(relation) AND clip_search_internal.is_table(relation));
-- The triggers of the watches take their column's number in their names.
DO $rename$
DECLARE
    watch record;
    clone record;
BEGIN
    FOR watch IN SELECT w.relation, w.target_attnum FROM clip_search_internal.watches w
                 JOIN pg_catalog.pg_trigger t ON t.tgrelid OPERATOR(pg_catalog.=) w.relation::pg_catalog.oid
                 WHERE t.tgname OPERATOR(pg_catalog.=) 'clip_watch'
                   AND t.tgfoid OPERATOR(pg_catalog.=) 'clip_search_internal.watch_trigger()'::pg_catalog.regprocedure
    LOOP
        EXECUTE pg_catalog.format('ALTER TRIGGER clip_watch ON %s RENAME TO %I', watch.relation,
                                  clip_search_internal.watch_trigger_name(watch.target_attnum));
    END LOOP;
    -- Before PostgreSQL 15 that leaves the partitions' clones of a partitioned table's trigger as they were: each
    -- takes the name of the trigger at the top of its chain of parents.
    FOR clone IN
        WITH RECURSIVE chain AS (
            SELECT t.tgrelid AS clone_relation, t.tgparentid AS parent
            FROM pg_catalog.pg_trigger t
            WHERE t.tgname OPERATOR(pg_catalog.=) 'clip_watch'
              AND t.tgparentid OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
              AND t.tgfoid OPERATOR(pg_catalog.=) 'clip_search_internal.watch_trigger()'::pg_catalog.regprocedure
            UNION ALL
            SELECT c.clone_relation, p.tgparentid
            FROM chain c JOIN pg_catalog.pg_trigger p ON p.oid OPERATOR(pg_catalog.=) c.parent
            WHERE p.tgparentid OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
        )
        SELECT c.clone_relation, top.tgname
        FROM chain c JOIN pg_catalog.pg_trigger top ON top.oid OPERATOR(pg_catalog.=) c.parent
        WHERE top.tgparentid OPERATOR(pg_catalog.=) 0::pg_catalog.oid
          AND top.tgname OPERATOR(pg_catalog.<>) 'clip_watch'
    LOOP
        EXECUTE pg_catalog.format('ALTER TRIGGER clip_watch ON %s RENAME TO %I',
                                  clone.clone_relation::pg_catalog.regclass, clone.tgname);
    END LOOP;
END
$rename$;

-- Whether this database's workers run, and what they do: "active" while one of them embeds, "idle" while they
-- wait, "not running" without shared_preload_libraries or when clip.worker_databases does not name this database.
-- A security definer, since pg_stat_activity hides other roles' sessions' types and states from ordinary roles; it
-- tells them nothing else.
CREATE OR REPLACE FUNCTION clip_search_internal.worker_state() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce((SELECT coalesce(a.state, 'running') FROM pg_stat_activity a
                     WHERE a.backend_type = 'clip_search worker' AND a.datname = current_database()
                     ORDER BY a.state IS NOT DISTINCT FROM 'active' DESC LIMIT 1),
                    'not running')
$function$;

-- How many of this database's workers run (clip.workers_per_database once started). A security definer as above.
CREATE FUNCTION clip_search_internal.workers_running() RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $function$
    SELECT count(*)::integer FROM pg_stat_activity a
    WHERE a.backend_type = 'clip_search worker' AND a.datname = current_database()
$function$;

-- Progress and health of each watch in this database, for the tables the viewer may read, and the time left at the
-- last batch's rate, times the workers that share the rows. The view reads every
-- watch (as its owner) and watch_status leaves out the others; as a security barrier, it applies a viewer's own
-- conditions only to what that leaves, unless they are leakproof (relation = 'photos'::regclass is, and spares the
-- counting of the other tables).
CREATE OR REPLACE VIEW @extschema@.clip_watch_status WITH (security_barrier) AS
SELECT w.relation, s.source_column, s.target_column, s.rows_pending, s.rows_embedded, s.rows_failed,
       s.rows_embedded_by_worker, s.last_batch_rows_per_s, s.last_batch_at, s.last_error, s.last_error_at,
       s.worker_state, r.workers, w.model,
       -- The rows due at the last batch's rate, each worker embedding at that rate. Every name qualified: a view
       -- binds them when it is created, under the search_path of CREATE EXTENSION.
       CASE WHEN s.rows_pending OPERATOR(pg_catalog.=) 0 THEN '0'::pg_catalog.interval
            WHEN s.last_batch_rows_per_s OPERATOR(pg_catalog.>) 0
            THEN pg_catalog.make_interval(secs => pg_catalog.round(
                     s.rows_pending OPERATOR(pg_catalog./)
                     (s.last_batch_rows_per_s OPERATOR(pg_catalog.*) GREATEST(r.workers, 1)))::double precision)
       END AS time_left
FROM clip_search_internal.watches w CROSS JOIN LATERAL clip_search_internal.watch_status(w) s
CROSS JOIN LATERAL (SELECT clip_search_internal.workers_running() AS workers) r;

DO $update$
DECLARE
    backfill_acl pg_catalog.aclitem[] := (SELECT p.proacl FROM pg_catalog.pg_proc p WHERE p.oid
        OPERATOR(pg_catalog.=) '@extschema@.clip_backfill(regclass, text, text, integer, text)'::pg_catalog.regprocedure);
    watch_acl    pg_catalog.aclitem[] := (SELECT p.proacl FROM pg_catalog.pg_proc p WHERE p.oid
        OPERATOR(pg_catalog.=) '@extschema@.clip_watch(regclass, text, text)'::pg_catalog.regprocedure);
    replaced record;
    granted  record;
    carried  pg_catalog.oid[];
BEGIN
    DROP PROCEDURE @extschema@.clip_backfill(regclass, text, text, integer, text);
    DROP FUNCTION @extschema@.clip_watch(regclass, text, text);
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

-- Has the background worker keep target_column embedded from source_column in target_table (a table or a
-- partitioned table; not a parent of inheriting tables, whose updates its trigger would not see): rows inserted or
-- updated from now on, and the rows whose target is NULL today, with model (a registered model's name; NULL: the
-- functions' default). Creates a trigger and a small partial index on the table; needs the rights to create them
-- (its owner). The worker embeds as the table's owner. Rows that cannot be embedded are recorded in
-- clip_backfill_failures and tried again when their source changes. Progress: clip_watch_status. A table may have
-- a watch for each of its vector columns.
CREATE FUNCTION @extschema@.clip_watch(target_table regclass, source_column text, target_column text,
    model text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    PERFORM clip_search_internal.start_watch(target_table, source_column, target_column, model, 'clip_watch');
END
$function$;
    -- A NULL acl is the default, which the new routines have.
    FOR replaced IN
        SELECT 'PROCEDURE @extschema@.clip_backfill(regclass, text, text, integer, text, text)' AS routine, backfill_acl AS acl
        UNION ALL
        SELECT 'FUNCTION @extschema@.clip_watch(regclass, text, text, text)', watch_acl
    LOOP
        CONTINUE WHEN replaced.acl IS NULL;
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON %s FROM PUBLIC', replaced.routine);
        FOR granted IN SELECT a.grantee, a.is_grantable FROM pg_catalog.aclexplode(replaced.acl) a
                       WHERE a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE' LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON %s TO %s%s', replaced.routine,
                CASE WHEN granted.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                     ELSE granted.grantee::pg_catalog.regrole::pg_catalog.text END,
                CASE WHEN granted.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END LOOP;
    -- The privileges carried over are the users', not the extension's own: pg_dump writes the differences from
    -- what pg_init_privs records as the extension's, so they must not be recorded there (nor the ones carried over
    -- to clip_similarity by the update to 0.5.0).
    carried := ARRAY['@extschema@.clip_backfill(regclass, text, text, integer, text, text)'::pg_catalog.regprocedure,
                     '@extschema@.clip_watch(regclass, text, text, text)'::pg_catalog.regprocedure,
                     '@extschema@.clip_similarity(text, bytea)'::pg_catalog.regprocedure,
                     '@extschema@.clip_similarity(vector, vector)'::pg_catalog.regprocedure]::pg_catalog.oid[];
    DELETE FROM pg_catalog.pg_init_privs i
    WHERE i.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
      AND i.privtype OPERATOR(pg_catalog.=) 'e'
      AND i.objoid OPERATOR(pg_catalog.=) ANY (carried);
    -- From PostgreSQL 17 on, the roles those records name depend on them ('i'): the dependencies go with them, or
    -- the roles could never be dropped.
    DELETE FROM pg_catalog.pg_shdepend s
    WHERE s.dbid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                         WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
      AND s.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
      AND s.deptype OPERATOR(pg_catalog.=) 'i'
      AND s.objid OPERATOR(pg_catalog.=) ANY (carried);
END
$update$;

-- The functions' forms that take a registered model's name, and the cache's clean-up (src/embed.rs,
-- src/similarity.rs, src/info.rs, src/weights_cache.rs).
CREATE FUNCTION @extschema@.clip_embed_text("input" text, "model" name, "language" text DEFAULT NULL) RETURNS vector
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_embed_text_by_wrapper';
CREATE FUNCTION @extschema@.clip_embed_image("image" bytea, "model" name) RETURNS vector
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_embed_image_by_wrapper';
CREATE FUNCTION @extschema@.clip_embed_texts("inputs" text[], "model" name) RETURNS vector[]
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_embed_texts_by_wrapper';
CREATE FUNCTION @extschema@.clip_embed_images("inputs" bytea[], "model" name) RETURNS vector[]
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_embed_images_by_wrapper';
CREATE FUNCTION @extschema@.clip_similarity("text" text, "image" bytea, "model" name) RETURNS double precision
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_similarity_text_image_by_wrapper';
CREATE FUNCTION @extschema@.clip_classify("image" bytea, "labels" text[], "model" name,
    "template" text DEFAULT 'a photo of a {}') RETURNS TABLE ("label" text, "probability" real)
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_classify_by_wrapper';
CREATE FUNCTION @extschema@.clip_tokenize("input" text, "model" name) RETURNS integer[]
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_tokenize_by_wrapper';
CREATE FUNCTION @extschema@.clip_info("model" name) RETURNS jsonb
STABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_info_by_wrapper';
CREATE FUNCTION @extschema@.clip_clean_weights_cache() RETURNS TABLE ("directory" text, "tower" text,
    "megabytes" double precision, "action" text)
VOLATILE STRICT PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clip_clean_weights_cache_wrapper';

CREATE TABLE clip_search_internal.models (
    name            text        PRIMARY KEY,
    directory       text        NOT NULL,
    manifest_sha256 text        NOT NULL,
    architecture    text        NOT NULL,  -- the manifest's name: open_clip's model name, such as ViT-B-32
    weights         text        NOT NULL,  -- where the weights came from, as the manifest says
    embed_dim       integer     NOT NULL,
    tower_sha256    text[]      NOT NULL,  -- each tower's source sha256, by which the weights cache names its towers
    registered_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    unregistered_at timestamptz,           -- set by clip_unregister_model: the name keeps its files
    CHECK (clip_search_internal.is_model_name(name))
);
-- pg_dump keeps the registrations with the data.
SELECT pg_catalog.pg_extension_config_dump('clip_search_internal.models', '');
GRANT SELECT ON clip_search_internal.models TO PUBLIC;

-- What clip_register_model records of a model directory, once every file matched the manifest (src/registry.rs).
CREATE FUNCTION clip_search_internal.read_manifest(directory text) RETURNS jsonb
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'read_manifest_wrapper';
REVOKE ALL ON FUNCTION clip_search_internal.read_manifest(text) FROM PUBLIC;

-- Removes the prepared towers of these source sha256s that no model of this database uses and no process maps, for
-- clip_unregister_model (src/weights_cache.rs).
CREATE FUNCTION clip_search_internal.remove_model_weights(towers text[]) RETURNS bigint
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'remove_model_weights_wrapper';
REVOKE ALL ON FUNCTION clip_search_internal.remove_model_weights(text[]) FROM PUBLIC;

-- The model that the functions use without a model argument, if it is registered: clip.default_model, or else the
-- model registered with clip.model_dir's directory.
CREATE FUNCTION clip_search_internal.default_model_name() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce(nullif(current_setting('clip.default_model', true), ''),
                    (SELECT m.name FROM clip_search_internal.models m
                     WHERE m.directory = current_setting('clip.model_dir', true) AND m.unregistered_at IS NULL
                     ORDER BY m.name LIMIT 1))
$function$;

-- What in this database uses model, as descriptions for messages: the indexes, column defaults and generated
-- columns, check constraints, views and materialized views, row-level security policies and trigger conditions
-- whose expression calls one of the extension's functions that embed, classify or tokenize, as PostgreSQL records
-- it (pg_depend); clip_embed_trigger's triggers; and the watched columns. A call with a model argument uses the
-- model it names, and an expression whose model argument is not a constant, and that names no model as a
-- constant, may use any; a call without one uses the default model. Not seen: functions of users that call these
-- functions, extended statistics, and columns filled by plain INSERTs or UPDATEs.
CREATE FUNCTION clip_search_internal.model_users(model text) RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    WITH embedding_functions AS (
        SELECT p.oid, 'model' = ANY (p.proargnames) AS takes_model
        FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'clip_search'
        WHERE p.proname LIKE 'clip\_%' AND p.pronargs > 0
          AND p.proargtypes[0] IN ('text'::regtype, 'bytea'::regtype, 'text[]'::regtype, 'bytea[]'::regtype)
    ), calls AS (
        SELECT DISTINCT d.classid, d.objid, d.objsubid, f.takes_model
        FROM pg_depend d JOIN embedding_functions f ON d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
    ), described AS (
        SELECT c.takes_model, u.user_object, u.expression
        FROM calls c CROSS JOIN LATERAL (
            SELECT format('index %s', i.indexrelid::regclass),
                   concat_ws(' WHERE ', pg_get_expr(i.indexprs, i.indrelid), pg_get_expr(i.indpred, i.indrelid))
            FROM pg_index i WHERE c.classid = 'pg_class'::regclass AND i.indexrelid = c.objid
            UNION ALL
            SELECT format('column %I of %s', a.attname, a.attrelid::regclass), pg_get_expr(ad.adbin, ad.adrelid)
            FROM pg_attrdef ad JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
            WHERE (c.classid = 'pg_attrdef'::regclass AND ad.oid = c.objid)
               -- a generated column's expression, recorded as the column's own by PostgreSQL 13
               OR (c.classid = 'pg_class'::regclass AND ad.adrelid = c.objid AND ad.adnum = c.objsubid)
            UNION ALL
            SELECT format('constraint %I of %s', con.conname, con.conrelid::regclass), pg_get_constraintdef(con.oid)
            FROM pg_constraint con WHERE c.classid = 'pg_constraint'::regclass AND con.oid = c.objid
            UNION ALL
            SELECT format('view %s', r.ev_class::regclass), pg_get_viewdef(r.ev_class)
            FROM pg_rewrite r WHERE c.classid = 'pg_rewrite'::regclass AND r.oid = c.objid
            UNION ALL
            SELECT format('policy %I of %s', pol.polname, pol.polrelid::regclass),
                   concat_ws(' ', pg_get_expr(pol.polqual, pol.polrelid), pg_get_expr(pol.polwithcheck, pol.polrelid))
            FROM pg_policy pol WHERE c.classid = 'pg_policy'::regclass AND pol.oid = c.objid
            UNION ALL
            SELECT format('trigger %I of %s', t.tgname, t.tgrelid::regclass), pg_get_triggerdef(t.oid)
            FROM pg_trigger t WHERE c.classid = 'pg_trigger'::regclass AND t.oid = c.objid
        ) u(user_object, expression)
    )
    SELECT user_object FROM described
    WHERE CASE WHEN takes_model
               THEN strpos(expression, quote_literal(model_users.model) || '::name') > 0
                    OR expression !~ '''::name\M'
               ELSE model_users.model = clip_search_internal.default_model_name() END
    UNION
    SELECT format('trigger %I of %s', t.tgname, t.tgrelid::regclass) FROM pg_trigger t
    WHERE t.tgfoid = '@extschema@.clip_embed_trigger()'::regprocedure
      AND CASE WHEN t.tgnargs >= 3
               THEN (clip_search_internal.trigger_arguments(t.tgargs))[3] = model_users.model
               ELSE model_users.model = clip_search_internal.default_model_name() END
    UNION
    SELECT format('watched column %s of %s', clip_search_internal.column_name(w.relation, w.target_attnum), w.relation)
    FROM clip_search_internal.watches w JOIN pg_class c ON c.oid = w.relation
    WHERE w.model = model_users.model
       OR (w.model IS NULL AND model_users.model = clip_search_internal.default_model_name())
    ORDER BY 1
$function$;

-- An error unless the current role is a superuser.
CREATE FUNCTION clip_search_internal.require_superuser(caller text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    IF NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user), false) THEN
        RAISE EXCEPTION '%: must be superuser', caller USING ERRCODE = 'insufficient_privilege',
            HINT = 'Superusers register models, since that reads files of the server; every role may use the registered ones (clip_models).';
    END IF;
END
$function$;

-- Registers the model in directory (absolute, readable by the server) as model, after checking every file against
-- its manifest. Registering the same files again is a no-op (a moved directory is recorded); other files under a
-- name that was ever registered are refused unless replace is true: what embeds with the name is listed either
-- way.
CREATE FUNCTION @extschema@.clip_register_model(model text, directory text, replace boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    manifest   jsonb;
    registered clip_search_internal.models;
    users      text;
BEGIN
    PERFORM clip_search_internal.require_superuser('clip_register_model');
    IF model IS NULL OR NOT clip_search_internal.is_model_name(model) THEN
        RAISE EXCEPTION 'clip_register_model: a model name is 1 to 62 letters, digits, ".", "_" or "-", starting with a letter or digit (got %)',
            quote_nullable(model) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF directory IS NULL OR left(directory, 1) <> '/' THEN
        RAISE EXCEPTION 'clip_register_model: the directory must be an absolute path (got %)', quote_nullable(directory)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    manifest := clip_search_internal.read_manifest(directory);
    -- Registrations of one name, made at once, follow each other: each sees the files the one before recorded.
    LOCK TABLE clip_search_internal.models IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO registered FROM clip_search_internal.models m WHERE m.name = model;
    IF FOUND AND registered.manifest_sha256 <> manifest->>'sha256' THEN
        users := (SELECT string_agg(u, ', ') FROM clip_search_internal.model_users(model) u);
        IF NOT coalesce(replace, false) THEN
            RAISE EXCEPTION 'clip_register_model: model "%" was registered with other files', model
                USING ERRCODE = 'duplicate_object',
                      DETAIL = coalesce('It is used by: ' || users || '.',
                                        'Nothing of this database that PostgreSQL records uses it.'),
                      HINT = 'The embeddings of a model name never change: register these files under another name, or pass replace => true and then re-embed what the old files made.';
        END IF;
        RAISE WARNING 'clip_register_model: model "%" now names other files, whose embeddings cannot be compared with the old ones', model
            USING DETAIL = coalesce('It is used by: ' || users || '.',
                                    'Nothing of this database that PostgreSQL records uses it.'),
                  HINT = 'Re-embed them: REINDEX the indexes, and set the stored columns to NULL and embed them again.';
    END IF;
    INSERT INTO clip_search_internal.models AS m
        (name, directory, manifest_sha256, architecture, weights, embed_dim, tower_sha256)
    VALUES (model, directory, manifest->>'sha256', manifest->>'architecture', manifest->>'weights',
            (manifest->>'embed_dim')::integer, ARRAY(SELECT jsonb_array_elements_text(manifest->'tower_sha256')))
    ON CONFLICT (name) DO UPDATE
    SET directory = excluded.directory, manifest_sha256 = excluded.manifest_sha256,
        architecture = excluded.architecture, weights = excluded.weights, embed_dim = excluded.embed_dim,
        tower_sha256 = excluded.tower_sha256, registered_at = excluded.registered_at, unregistered_at = NULL
    WHERE (m.directory, m.manifest_sha256, m.unregistered_at) IS DISTINCT FROM
          (excluded.directory, excluded.manifest_sha256, NULL);
END
$function$;

-- Takes a model's name out of use, unless something of this database uses it (model_users), and removes its
-- prepared weights that nothing else uses. The name keeps its files: registering other files under it later needs
-- replace => true.
CREATE FUNCTION @extschema@.clip_unregister_model(model text) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    users  text;
    towers text[];
BEGIN
    PERFORM clip_search_internal.require_superuser('clip_unregister_model');
    LOCK TABLE clip_search_internal.models IN SHARE ROW EXCLUSIVE MODE;
    users := (SELECT string_agg(u, ', ') FROM clip_search_internal.model_users(model) u);
    IF users IS NOT NULL THEN
        RAISE EXCEPTION 'clip_unregister_model: model "%" is in use', model
            USING ERRCODE = 'dependent_objects_still_exist', DETAIL = 'It is used by: ' || users || '.',
                  HINT = 'Drop them, or move them to another model, first.';
    END IF;
    UPDATE clip_search_internal.models m SET unregistered_at = now()
    WHERE m.name = model AND m.unregistered_at IS NULL RETURNING m.tower_sha256 INTO towers;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'clip_unregister_model: model "%" is not registered', model USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM clip_search_internal.remove_model_weights(towers);
END
$function$;

-- The registered models, and which one the functions use without a model argument.
CREATE VIEW @extschema@.clip_models AS
SELECT m.name, m.architecture, m.weights, m.embed_dim,
       m.name IS NOT DISTINCT FROM clip_search_internal.default_model_name() AS is_default,
       m.directory, m.manifest_sha256, m.registered_at
FROM clip_search_internal.models m WHERE m.unregistered_at IS NULL;
GRANT SELECT ON @extschema@.clip_models TO PUBLIC;

-- The batch size in force (clip.batch_size, capped by clip.max_batch_size; src/migrate.rs).
CREATE FUNCTION clip_search_internal.batch_size() RETURNS integer
LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'batch_size_wrapper';

-- The model whose embeddings a column holds, as the extension knows it: the model of the watch that keeps the
-- column embedded, or else the functions' default. A query that names its model this way,
--   ORDER BY embedding <=> clip_embed_text('...', clip_column_model('photos', 'embedding'))
-- goes on comparing like with like across clip_migrate_switch, which changes both in one transaction.
CREATE FUNCTION @extschema@.clip_column_model(target_table regclass, target_column text) RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce((SELECT w.model FROM clip_search_internal.watches w
                     WHERE w.relation = target_table
                       AND w.target_attnum = clip_search_internal.column_attnum(target_table, target_column,
                                                                               'clip_column_model')),
                    clip_search_internal.default_model_name())::name
$function$;

-- The HNSW indexes of a table's column (on the column alone, whole), oldest first: the index, its operator class
-- (qualified) and its options.
CREATE FUNCTION clip_search_internal.hnsw_indexes(relation regclass, attnum smallint,
    OUT index regclass, OUT operator_class text, OUT options text[]) RETURNS SETOF record
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT i.indexrelid::regclass, format('%I.%I', n.nspname, oc.opcname), c.reloptions
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
    JOIN pg_opclass oc ON oc.oid = i.indclass[0] JOIN pg_namespace n ON n.oid = oc.opcnamespace
    WHERE i.indrelid = relation AND i.indnatts = 1 AND i.indkey[0] = attnum
      AND i.indexprs IS NULL AND i.indpred IS NULL AND am.amname = 'hnsw'
    ORDER BY i.indexrelid
$function$;

-- Starts moving target_column of target_table (a vector or halfvec column, filled from source_column) to model
-- (a registered model's name): adds the column <target_column>_next of model's dimension, makes the HNSW indexes
-- of target_column again on it, and has the background worker fill it. The call holds an ACCESS EXCLUSIVE lock on
-- the table while it makes the indexes (one scan of the table, since the new column is empty); then queries go
-- on using target_column. Progress: clip_migrations. Returns the new column's name. Needs the table owner's
-- rights.
CREATE FUNCTION @extschema@.clip_migrate(target_table regclass, source_column text, target_column text, model text)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    -- As type name: cut to 63 bytes, as PostgreSQL cuts a column's name.
    new_column    name := (target_column || '_next')::name;
    target_type   regtype;
    target_number smallint;
    dimension     integer;
    index         record;
BEGIN
    PERFORM clip_search_internal.check_owner(target_table, 'clip_migrate');
    IF model IS NULL THEN
        RAISE EXCEPTION 'clip_migrate: the model to migrate to must be named' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM clip_search_internal.check_model(model, 'clip_migrate');
    IF EXISTS (SELECT FROM clip_search_internal.migrations m WHERE m.relation = target_table) THEN
        RAISE EXCEPTION 'clip_migrate: % is being migrated already', target_table USING ERRCODE = 'duplicate_object',
            HINT = 'Switch to the new embeddings with clip_migrate_switch, or cancel with clip_migrate_cancel.';
    END IF;
    target_type := clip_search_internal.column_type(target_table, target_column, 'clip_migrate');
    target_number := clip_search_internal.column_attnum(target_table, target_column, 'clip_migrate');
    IF (SELECT t.typname FROM pg_type t WHERE t.oid = target_type) NOT IN ('vector', 'halfvec') THEN
        RAISE EXCEPTION 'clip_migrate: column "%" of % is of type %, not vector or halfvec',
            target_column, target_table, target_type USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF octet_length(target_column) > 63 - octet_length('_next') THEN
        RAISE EXCEPTION 'clip_migrate: the name of column "%" is too long to name the migration''s columns after it',
            target_column USING ERRCODE = 'name_too_long',
            HINT = format('Rename it to a name of at most %s bytes first.', 63 - octet_length('_next'));
    END IF;
    IF EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = target_table AND a.attname = new_column
               AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'clip_migrate: % has a column "%" already', target_table, new_column
            USING ERRCODE = 'duplicate_column', HINT = 'Rename or drop it: the migration makes its new column there.';
    END IF;
    dimension := (@extschema@.clip_info(model::name)->>'embed_dim')::integer;
    EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s(%s)', target_table, new_column,
                   clip_search_internal.qualified_type(target_type), dimension);
    -- The target column's HNSW indexes, with their operator class and options.
    FOR index IN SELECT * FROM clip_search_internal.hnsw_indexes(target_table, target_number) LOOP
        EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %s)%s', target_table, new_column, index.operator_class,
                       CASE WHEN index.options IS NOT NULL
                            THEN format(' WITH (%s)', array_to_string(index.options, ', ')) ELSE '' END);
    END LOOP;
    PERFORM clip_search_internal.start_watch(target_table, source_column, new_column, model, 'clip_migrate');
    INSERT INTO clip_search_internal.migrations (relation, source_attnum, target_attnum, new_attnum, model)
    VALUES (target_table, clip_search_internal.column_attnum(target_table, source_column, 'clip_migrate'),
            target_number, clip_search_internal.column_attnum(target_table, new_column, 'clip_migrate'), model);
    RETURN new_column;
END
$function$;

-- The migration of target_table, or an error that names caller.
CREATE FUNCTION clip_search_internal.migration_of(target_table regclass, caller text)
RETURNS clip_search_internal.migrations LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    migration clip_search_internal.migrations;
BEGIN
    PERFORM clip_search_internal.check_owner(target_table, caller);
    SELECT m.* INTO migration FROM clip_search_internal.migrations m WHERE m.relation = target_table;
    IF migration.relation IS NULL THEN
        RAISE EXCEPTION '%: % is not being migrated', caller, target_table USING ERRCODE = 'undefined_object';
    END IF;
    RETURN migration;
END
$function$;

-- The watch of a migration's new column; NULL if it ended.
CREATE FUNCTION clip_search_internal.migration_watch(migration clip_search_internal.migrations)
RETURNS clip_search_internal.watches LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT w.* FROM clip_search_internal.watches w
    WHERE w.relation = migration.relation AND w.target_attnum = migration.new_attnum
$function$;

-- Gives the migration's new embeddings the target column's name, in one transaction: once no more than
-- clip.batch_size rows are due in the new column, it locks the table (ACCESS EXCLUSIVE: queries wait for the
-- moment it takes), embeds the rows still due, ends the watch of the target column if there is one, renames the
-- target column to <target_column>_old (drops it with drop_old), and renames the new column to the target
-- column's name. Its watch keeps it embedded from then on. Refused while a clip_embed_trigger trigger fills the
-- target column: it would fill the renamed column with the old model.
CREATE FUNCTION @extschema@.clip_migrate_switch(target_table regclass, drop_old boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    migration     clip_search_internal.migrations;
    watch         clip_search_internal.watches;
    old_watch     clip_search_internal.watches;
    source_column text;
    target_column text;
    new_column    text;
    old_column    name;
    pending       bigint;
    batch         record;
    filler        name;
    viewers       text;
    old_indexes   name[];     -- names: the indexes are gone when the new ones take them
    new_indexes   regclass[];
BEGIN
    migration := clip_search_internal.migration_of(target_table, 'clip_migrate_switch');
    -- One switch or cancel at a time, before anything reads the table: the lock is taken again, stronger, below.
    EXECUTE format('LOCK TABLE %s IN SHARE UPDATE EXCLUSIVE MODE', target_table);
    watch := clip_search_internal.migration_watch(migration);
    source_column := clip_search_internal.column_name(target_table, migration.source_attnum);
    target_column := clip_search_internal.column_name(target_table, migration.target_attnum);
    new_column := clip_search_internal.column_name(target_table, migration.new_attnum);
    IF source_column IS NULL OR target_column IS NULL OR new_column IS NULL OR watch.relation IS NULL THEN
        RAISE EXCEPTION 'clip_migrate_switch: a column of the migration of % was dropped, or its watch ended',
            target_table USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Cancel it with clip_migrate_cancel.';
    END IF;
    SELECT t.tgname INTO filler FROM pg_trigger t
    WHERE t.tgrelid = target_table AND t.tgfoid = '@extschema@.clip_embed_trigger()'::regprocedure
      AND (clip_search_internal.trigger_arguments(t.tgargs))[2] = target_column
    LIMIT 1;
    IF filler IS NOT NULL THEN
        RAISE EXCEPTION 'clip_migrate_switch: the trigger % fills column "%" of % with clip_embed_trigger',
            filler, target_column, target_table USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = 'After the switch it would fill the column with the old model.',
            HINT = 'Drop the trigger in the transaction that switches: the worker keeps the column embedded after it.';
    END IF;
    SELECT string_agg(r.ev_class::regclass::text, ', ') INTO viewers
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = target_table
      AND d.refobjsubid = migration.target_attnum AND r.ev_class <> target_table;
    IF viewers IS NOT NULL THEN
        RAISE EXCEPTION 'clip_migrate_switch: views read column "%" of %: %', target_column, target_table, viewers
            USING ERRCODE = 'dependent_objects_still_exist',
            DETAIL = 'A view keeps the column it was made with, which would go on holding the old model.',
            HINT = 'Drop them in the transaction that switches, and create them again after it.';
    END IF;
    old_column := (target_column || '_old')::name;
    IF NOT drop_old AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = target_table
                                AND a.attname = old_column AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'clip_migrate_switch: % has a column "%" already', target_table, old_column
            USING ERRCODE = 'duplicate_column',
            HINT = 'Rename or drop it, or switch with drop_old => true.';
    END IF;
    SELECT s.rows_pending INTO pending FROM clip_search_internal.watch_status(watch) s;
    IF pending > clip_search_internal.batch_size() THEN
        RAISE EXCEPTION 'clip_migrate_switch: % rows of % are still to be embedded with the model %',
            pending, target_table, migration.model USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'clip_migrations shows the progress and the time left.';
    END IF;
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', target_table);
    -- The rows due since, under the lock: nothing can be inserted or updated now.
    LOOP
        SELECT b.done, b.skipped INTO batch
        FROM clip_search_internal.embed_batch(target_table, source_column, new_column,
                                              clip_search_internal.batch_size(), 'skip',
                                              (SELECT s.boot_val FROM pg_settings s WHERE s.name = 'search_path'),
                                              migration.model) b;
        EXIT WHEN batch.done + batch.skipped = 0;
    END LOOP;
    FOR old_watch IN SELECT * FROM clip_search_internal.watches w
                     WHERE w.relation = target_table AND w.target_attnum = migration.target_attnum
    LOOP
        PERFORM clip_search_internal.stop_watch(old_watch);
    END LOOP;
    IF drop_old THEN
        old_indexes := ARRAY(SELECT c.relname FROM clip_search_internal.hnsw_indexes(target_table,
                                                                                   migration.target_attnum) h
                             JOIN pg_class c ON c.oid = h.index);
        new_indexes := ARRAY(SELECT h.index FROM clip_search_internal.hnsw_indexes(target_table,
                                                                                 migration.new_attnum) h);
        EXECUTE format('ALTER TABLE %s DROP COLUMN %I', target_table, target_column);
        -- The indexes clip_migrate made like the old column's take their names.
        IF cardinality(old_indexes) = cardinality(new_indexes) THEN
            FOR i IN 1 .. cardinality(new_indexes) LOOP
                EXECUTE format('ALTER INDEX %s RENAME TO %I', new_indexes[i], old_indexes[i]);
            END LOOP;
        END IF;
    ELSE
        -- Nothing fills the old column from now on: rows inserted without it must be accepted.
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP NOT NULL', target_table, target_column);
        EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', target_table, target_column, old_column);
    END IF;
    EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', target_table, new_column, target_column);
    -- Its watch's index takes a name after the column's.
    IF EXISTS (SELECT FROM pg_index i WHERE i.indexrelid = watch.pending_index AND i.indrelid = target_table) THEN
        EXECUTE format('ALTER INDEX %s RENAME TO %I', watch.pending_index,
                       clip_search_internal.pending_index_name(target_table, target_column));
    END IF;
    DELETE FROM clip_search_internal.migrations m WHERE m.relation = target_table;
END
$function$;

-- Ends the migration of target_table: drops its new column (and with it the column's indexes) and its watch. The
-- table is left as it was before clip_migrate.
CREATE FUNCTION @extschema@.clip_migrate_cancel(target_table regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    migration  clip_search_internal.migrations;
    watch      clip_search_internal.watches;
    new_column text;
BEGIN
    migration := clip_search_internal.migration_of(target_table, 'clip_migrate_cancel');
    -- The table before the rows, as the worker's batches and clip_migrate_switch take them.
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', target_table);
    watch := clip_search_internal.migration_watch(migration);
    new_column := clip_search_internal.column_name(target_table, migration.new_attnum);
    DELETE FROM clip_search_internal.migrations m WHERE m.relation = target_table;
    IF watch.relation IS NOT NULL THEN
        PERFORM clip_search_internal.stop_watch(watch);
    END IF;
    IF new_column IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s DROP COLUMN %I', target_table, new_column);
    END IF;
END
$function$;

-- Each migration of the tables the viewer may read: its columns and model, the progress and the time left of its
-- new column's watch (see clip_watch_status; NULL when a column of the migration was dropped), and whether
-- clip_migrate_switch can switch now. Every name is qualified: a view binds them when it is created.
CREATE VIEW @extschema@.clip_migrations WITH (security_barrier) AS
SELECT m.relation, clip_search_internal.column_name(m.relation, m.source_attnum) AS source_column,
       clip_search_internal.column_name(m.relation, m.target_attnum) AS target_column,
       clip_search_internal.column_name(m.relation, m.new_attnum) AS new_column, m.model, m.started_at,
       s.rows_pending, s.rows_embedded, s.rows_failed,
       s.last_batch_rows_per_s, s.time_left, s.last_error, s.worker_state,
       s.rows_pending OPERATOR(pg_catalog.<=) clip_search_internal.batch_size() AS ready_to_switch
FROM clip_search_internal.migrations m
LEFT JOIN @extschema@.clip_watch_status s
  ON s.relation OPERATOR(pg_catalog.=) m.relation
 AND s.target_column OPERATOR(pg_catalog.=) clip_search_internal.column_name(m.relation, m.new_attnum)
WHERE pg_catalog.has_table_privilege(m.relation::pg_catalog.oid, 'SELECT');

GRANT SELECT ON @extschema@.clip_migrations TO PUBLIC;
ALTER TABLE clip_search_internal.migrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers ON clip_search_internal.migrations FOR SELECT
    USING (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'SELECT'));
CREATE POLICY owners ON clip_search_internal.migrations
    USING (clip_search_internal.owns(relation))
    WITH CHECK (clip_search_internal.owns(relation) AND clip_search_internal.is_table(relation));
GRANT SELECT, INSERT (relation, source_attnum, target_attnum, new_attnum, model), DELETE
    ON clip_search_internal.migrations TO PUBLIC;

COMMENT ON FUNCTION @extschema@.clip_embed_text(text, name, text) IS
    'The embedding of a text by a registered model (clip_models), in a language for models that take one';
COMMENT ON FUNCTION @extschema@.clip_embed_image(bytea, name) IS
    'The embedding of an image by a registered model (clip_models)';
COMMENT ON FUNCTION @extschema@.clip_embed_texts(text[], name) IS
    'Embeddings of an array of texts by a registered model, in batches of clip.batch_size; NULL gives NULL';
COMMENT ON FUNCTION @extschema@.clip_embed_images(bytea[], name) IS
    'Embeddings of an array of images by a registered model, in batches of clip.batch_size; NULL gives NULL';
COMMENT ON FUNCTION @extschema@.clip_similarity(text, bytea, name) IS
    'Cosine similarity of a text and an image under a registered model';
COMMENT ON FUNCTION @extschema@.clip_classify(bytea, text[], name, text) IS
    'Zero-shot classification of an image under a registered model, most probable label first';
COMMENT ON FUNCTION @extschema@.clip_tokenize(text, name) IS
    'A text''s token ids as a registered model''s tokenizer gives them, not padded';
COMMENT ON FUNCTION @extschema@.clip_info(name) IS
    'A registered model, ONNX Runtime, the settings in force and this backend''s memory, as jsonb';
COMMENT ON FUNCTION @extschema@.clip_register_model(text, text, boolean) IS
    'Registers a model directory under a name (superuser); other files under a name need replace => true';
COMMENT ON FUNCTION @extschema@.clip_unregister_model(text) IS
    'Removes a model''s name (superuser), unless an index, generated column or watch embeds with it';
COMMENT ON VIEW @extschema@.clip_models IS
    'The registered models, and which one the functions use without a model argument';
COMMENT ON FUNCTION @extschema@.clip_clean_weights_cache() IS
    'Removes the prepared weights that no model of this database uses and no process maps (superuser)';

COMMENT ON FUNCTION @extschema@.clip_embed_trigger() IS
    'Trigger function: fills a vector column from a text or bytea column; arguments: source column, target column, optionally a registered model';
COMMENT ON PROCEDURE @extschema@.clip_backfill(regclass, text, text, integer, text, text) IS
    'Embeds the rows whose target is NULL, committing each batch; resumable; CALL it in autocommit mode';
COMMENT ON FUNCTION @extschema@.clip_watch(regclass, text, text, text) IS
    'Has the background worker keep a vector column embedded from a text or bytea column';

COMMENT ON FUNCTION @extschema@.clip_unwatch(regclass) IS
    'Stops watching a table''s columns (but a migration''s new column); the embeddings stay';
COMMENT ON FUNCTION @extschema@.clip_migrate(regclass, text, text, text) IS
    'Starts moving a vector column to another model: a new column filled by the background worker while queries use the old one';
COMMENT ON FUNCTION @extschema@.clip_migrate_switch(regclass, boolean) IS
    'Gives a migration''s new embeddings the old column''s name, in one transaction; keeps the old column as <name>_old, or drops it';
COMMENT ON FUNCTION @extschema@.clip_migrate_cancel(regclass) IS
    'Ends a migration and drops its new column, leaving the table as it was';
COMMENT ON FUNCTION @extschema@.clip_column_model(regclass, text) IS
    'The model whose embeddings a column holds: its watch''s, or else the default model';
COMMENT ON VIEW @extschema@.clip_migrations IS
    'Progress of each migration the current role may read, the time left, and whether it can switch now';
COMMENT ON VIEW @extschema@.clip_watch_status IS
    'Progress of each watch the current role may read, the time left at the last batch''s rate, and whether the background worker runs';

-- The model that made the stored embeddings gets a name: its manifest's (open_clip's model name), or "default".
DO $register$
DECLARE
    directory text := pg_catalog.current_setting('clip.model_dir', true);
    manifest  jsonb;
BEGIN
    IF coalesce(directory, '') OPERATOR(pg_catalog.=) '' THEN
        RETURN;
    END IF;
    IF pg_catalog.left(directory, 1) OPERATOR(pg_catalog.<>) '/' THEN
        directory := pg_catalog.current_setting('data_directory') OPERATOR(pg_catalog.||) '/'
                     OPERATOR(pg_catalog.||) directory;
    END IF;
    BEGIN
        manifest := clip_search_internal.read_manifest(directory);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'clip_search: the model in clip.model_dir (%) is not registered: %', directory, SQLERRM
            USING HINT = 'Register it with clip_register_model(name, directory) once its files are in place.';
        RETURN;
    END;
    PERFORM @extschema@.clip_register_model(
        CASE WHEN clip_search_internal.is_model_name(manifest OPERATOR(pg_catalog.->>) 'architecture')
             THEN manifest OPERATOR(pg_catalog.->>) 'architecture' ELSE 'default' END,
        directory, false);
END
$register$;
