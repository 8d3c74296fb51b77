-- clip_search 0.3.0 -> 0.4.0: every SQL function of the extension pins its search_path and calls the extension's
-- functions with arguments of their exact types, so that no object a user creates can stand in for one they use
-- while a more privileged role runs them; clip_backfill calls only such functions; policies and the status view
-- are bound to pg_catalog's functions by name. Watches name their columns by attribute number, so they follow a
-- rename; a watch whose batch fails is retried with back-off; the watches table shows each role the watches of the
-- tables it may read; clip_watch_status tells every role whether the worker runs.
-- The definitions below repeat sql/auto_embed.sql and sql/watch.sql (tests/pg_regress/sql/upgrade.sql compares an
-- upgraded extension with a fresh install).
\echo Use "ALTER EXTENSION clip_search UPDATE TO '0.4.0'" to load this file. \quit

-- Nothing below evaluates a name through the search_path that ALTER EXTENSION sets (the extension's schema and
-- pgvector's), where a user may have created objects: what runs, runs in functions that pin their own.

-- --- auto-embedding (sql/auto_embed.sql) ------------------------------------------------------------------------
-- Fills TG_ARGV[1] (a vector column) from TG_ARGV[0] (a text, varchar or bytea column) with the text or the
-- image tower, chosen by the source column's type:
--   CREATE TRIGGER photos_embed BEFORE INSERT OR UPDATE OF image ON photos
--       FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('image', 'embedding');
-- On UPDATE it re-embeds only when the source changed. A failing embedding aborts the statement.
CREATE OR REPLACE FUNCTION @extschema@.clip_embed_trigger() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    source_column text := TG_ARGV[0];
    target_column text := TG_ARGV[1];
    source_type   regtype;
    unchanged     boolean;
    embedding     text;  -- the vector's text form: no dependency on the schema pgvector lives in
BEGIN
    IF TG_NARGS <> 2 OR TG_LEVEL <> 'ROW' OR TG_WHEN <> 'BEFORE' OR TG_OP NOT IN ('INSERT', 'UPDATE') THEN
        RAISE EXCEPTION 'clip_embed_trigger: use it as a BEFORE INSERT OR UPDATE ... FOR EACH ROW trigger with two arguments, the source column and the target column'
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
                                                   format('($1).%I', source_column)))
        INTO embedding USING NEW;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(target_column, embedding));
END
$function$;
-- The type of a table's column, or an error that names the caller.
CREATE OR REPLACE FUNCTION clip_search_internal.column_type(relation regclass, column_name text, caller text) RETURNS regtype
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
DROP FUNCTION clip_search_internal.embed_function(regtype, text, boolean);

-- The call of the embedding function that serves a source column type, the single or the array form, on the SQL
-- expression argument. The argument is cast to the function's exact parameter type, named with its schema: a
-- varchar column then calls the text function itself, not an overload for varchar that a user could add to the
-- extension's schema, whatever the search_path.
CREATE FUNCTION clip_search_internal.embed_call(source_type regtype, caller text, batched boolean, argument text)
RETURNS text LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    IF source_type IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
        RETURN format(CASE WHEN batched THEN '@extschema@.clip_embed_texts((%s)::pg_catalog.text[])'
                           ELSE '@extschema@.clip_embed_text((%s)::pg_catalog.text)' END, argument);
    ELSIF source_type = 'bytea'::regtype THEN
        RETURN format(CASE WHEN batched THEN '@extschema@.clip_embed_images((%s)::pg_catalog.bytea[])'
                           ELSE '@extschema@.clip_embed_image((%s)::pg_catalog.bytea)' END, argument);
    END IF;
    RAISE EXCEPTION '%: cannot embed a column of type % (text, varchar or bytea)', caller, source_type
        USING ERRCODE = 'datatype_mismatch';
END
$function$;
-- The policies, bound to pg_catalog's functions by name.
DROP POLICY readers ON @extschema@.clip_backfill_failures;
DROP POLICY backfillers ON @extschema@.clip_backfill_failures;
CREATE POLICY readers ON @extschema@.clip_backfill_failures FOR SELECT
    USING (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'SELECT'));
CREATE POLICY backfillers ON @extschema@.clip_backfill_failures
    USING (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'UPDATE'))
    WITH CHECK (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'UPDATE'));

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
DROP FUNCTION clip_search_internal.embed_batch(regclass, text, text, integer, text);

-- One batch of clip_backfill and of the background worker's watches (sql/watch.sql): locks up to batch_size rows of
-- target_table (partitions and inheriting tables included) whose target is NULL, whose source is not, and which are
-- not a recorded failure with their current source, and embeds them in one array call. If a source in the batch
-- cannot be embedded, the rows are embedded one by one: with on_error => 'skip' the bad ones are recorded in
-- clip_backfill_failures; with 'stop' the first bad one ends the batch and is returned in failed_* (the rows before
-- it stay embedded, for the caller to commit). done = 0 and skipped = 0 without a failure: nothing is left to do.
-- The updates of target_table run with search_path table_search_path, which its triggers see.
CREATE FUNCTION clip_search_internal.embed_batch(target_table regclass, source_column text, target_column text,
    batch_size integer, on_error text, table_search_path text, OUT done bigint, OUT skipped bigint,
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
           clip_search_internal.embed_call(source_type, 'clip_backfill', true, 'pg_catalog.array_agg(source)'));
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
                                                               format('t.%I', source_column)),
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
CREATE OR REPLACE FUNCTION clip_search_internal.row_key(relation regclass) RETURNS text LANGUAGE sql STABLE
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
CREATE OR REPLACE FUNCTION clip_search_internal.forget_stale_failures(relation regclass, source_column text, target_column text)
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
    failed_message text
);
-- clip_backfill's start: checks the arguments, forgets stale failures, counts the rows to embed and says so.
CREATE FUNCTION clip_search_internal.backfill_start(target_table regclass, source_column text, target_column text,
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
-- One batch of clip_backfill, added to its progress; at the end, the warning about rows left out.
CREATE FUNCTION clip_search_internal.backfill_batch(progress clip_search_internal.backfill_progress)
RETURNS clip_search_internal.backfill_progress
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    batch record;
BEGIN
    SELECT * INTO batch FROM clip_search_internal.embed_batch(progress.target_table, progress.source_column,
        progress.target_column, progress.batch_size, progress.on_error, progress.search_path);
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
-- clip_backfill_failures and left out (on_error => 'skip'). Must be CALLed outside an explicit transaction block.
-- The body names only functions with their schema, and uses no operator: see the top of this file.
CREATE OR REPLACE PROCEDURE @extschema@.clip_backfill(target_table regclass, source_column text, target_column text,
                                           batch_size integer DEFAULT 64, on_error text DEFAULT 'stop')
LANGUAGE plpgsql AS $procedure$
DECLARE
    progress clip_search_internal.backfill_progress;
BEGIN
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
-- --- watches (sql/watch.sql) -------------------------------------------------------------------------------------
-- The watches table is made anew, its columns by attribute number; each watch's trigger too.
DROP VIEW @extschema@.clip_watch_status;
DROP FUNCTION clip_search_internal.watch_counts(regclass, text, text);
DROP FUNCTION clip_search_internal.watch_batch(regclass, text, text, integer);
ALTER TABLE clip_search_internal.watches RENAME TO watches_0_3_0;
ALTER INDEX clip_search_internal.watches_pkey RENAME TO watches_0_3_0_pkey;

CREATE TABLE clip_search_internal.watches (
    relation             regclass    PRIMARY KEY,
    source_attnum        smallint    NOT NULL,
    target_attnum        smallint    NOT NULL,
    pending_index        regclass    NOT NULL,  -- the partial index that finds due rows
    watched_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    rows_embedded        bigint      NOT NULL DEFAULT 0,
    rows_failed          bigint      NOT NULL DEFAULT 0,
    last_batch_at        timestamptz,
    last_batch_rate      double precision,    -- rows per second of the last batch
    last_error           text,
    last_error_at        timestamptz,
    failures_in_a_row    integer     NOT NULL DEFAULT 0,  -- batches that failed as a whole since the last that did not
    next_try_at          timestamptz                      -- the worker leaves a failing watch alone until then
);
-- The name of a column of relation, by attribute number; NULL if there is none (dropped, or the table is gone).
CREATE FUNCTION clip_search_internal.column_name(relation regclass, attnum smallint) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT a.attname::text FROM pg_attribute a
    WHERE a.attrelid = relation AND a.attnum = column_name.attnum AND a.attnum > 0 AND NOT a.attisdropped
$function$;
-- The attribute number of a column of relation, or an error that names the caller.
CREATE FUNCTION clip_search_internal.column_attnum(relation regclass, column_name text, caller text) RETURNS smallint
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
-- Clears the target (attribute number TG_ARGV[0]) of a watched row whose source an UPDATE changed, so the worker
-- embeds it again. The trigger's WHEN clause compares the source; a target column dropped since leaves the row as
-- it is (the watch is broken, and clip_watch_status says so).
CREATE OR REPLACE FUNCTION clip_search_internal.watch_trigger() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    target_column text := clip_search_internal.column_name(TG_RELID::regclass, TG_ARGV[0]::smallint);
BEGIN
    IF target_column IS NULL THEN
        RETURN NEW;
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(target_column, NULL));
END
$function$;
-- Makes the trigger of a watch: BEFORE UPDATE OF the source, when it changed. PostgreSQL keeps the column list and
-- the WHEN clause by attribute number, so both follow a rename.
CREATE FUNCTION clip_search_internal.create_watch_trigger(relation regclass, source_attnum smallint,
    target_attnum smallint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    source_column text := clip_search_internal.column_name(relation, source_attnum);
BEGIN
    EXECUTE format('CREATE TRIGGER clip_watch BEFORE UPDATE OF %1$I ON %2$s FOR EACH ROW
                    WHEN (OLD.%1$I IS DISTINCT FROM NEW.%1$I)
                    EXECUTE FUNCTION clip_search_internal.watch_trigger(%3$L)',
                   source_column, relation, target_attnum);
END
$function$;
-- Moves the watches of 0.3.0 over: their columns by attribute number (0, no column, if a column was renamed
-- since, which 0.3.0 did not follow: the watch then shows as broken) and their triggers remade. Only watches that
-- clip_watch made: the table has its trigger and the index is the table's (0.3.0's policies, bound when it was
-- installed, may have let a row for another role's table in).
CREATE FUNCTION clip_search_internal.upgrade_watches_0_3_0() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    w clip_search_internal.watches;
BEGIN
    INSERT INTO clip_search_internal.watches
    SELECT o.relation,
           coalesce((SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = o.relation AND a.attname = o.source_column
                                                          AND a.attnum > 0 AND NOT a.attisdropped), 0),
           coalesce((SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = o.relation AND a.attname = o.target_column
                                                          AND a.attnum > 0 AND NOT a.attisdropped), 0),
           o.pending_index, o.watched_at, o.rows_embedded, o.rows_failed, o.last_batch_at, o.last_batch_rate,
           o.last_error, o.last_error_at, 0, NULL
    FROM clip_search_internal.watches_0_3_0 o
    WHERE EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = o.relation AND t.tgname = 'clip_watch'
                                             AND t.tgfoid = 'clip_search_internal.watch_trigger()'::regprocedure)
      AND EXISTS (SELECT FROM pg_index i WHERE i.indexrelid = o.pending_index AND i.indrelid = o.relation);
    FOR w IN SELECT * FROM clip_search_internal.watches LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS clip_watch ON %s', w.relation);
        IF clip_search_internal.column_name(w.relation, w.source_attnum) IS NOT NULL THEN
            PERFORM clip_search_internal.create_watch_trigger(w.relation, w.source_attnum, w.target_attnum);
        END IF;
    END LOOP;
END
$function$;
SELECT clip_search_internal.upgrade_watches_0_3_0();
DROP FUNCTION clip_search_internal.upgrade_watches_0_3_0();
DROP TABLE clip_search_internal.watches_0_3_0;

-- An error unless the current role has the rights of relation's owner.
CREATE OR REPLACE FUNCTION clip_search_internal.check_owner(relation regclass, caller text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    IF NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = relation), 'USAGE') THEN
        RAISE EXCEPTION '%: must be the owner of table %', caller, relation USING ERRCODE = 'insufficient_privilege';
    END IF;
END
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
END
$function$;
-- Stops watching target_table: removes the trigger and the partial index clip_watch made. Embeddings stay.
CREATE OR REPLACE FUNCTION @extschema@.clip_unwatch(target_table regclass) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    watch clip_search_internal.watches;
BEGIN
    PERFORM clip_search_internal.check_owner(target_table, 'clip_unwatch');
    DELETE FROM clip_search_internal.watches w WHERE w.relation = target_table RETURNING * INTO watch;
    IF watch IS NULL THEN
        RAISE EXCEPTION 'clip_unwatch: % is not watched', target_table USING ERRCODE = 'undefined_object';
    END IF;
    -- The trigger is gone if its source column was dropped; the index if its target column was.
    EXECUTE format('DROP TRIGGER IF EXISTS clip_watch ON %s', target_table);
    -- Only an index of this table: a watch's row inserted by hand may name any index.
    IF EXISTS (SELECT FROM pg_index WHERE indexrelid = watch.pending_index AND indrelid = target_table) THEN
        EXECUTE format('DROP INDEX %s', watch.pending_index);
    END IF;
END
$function$;
-- One batch of a watch, run by the worker as the table's owner: embeds up to batch_size due rows, records those that
-- cannot be embedded, and returns how many it embedded and skipped; any other error (a column dropped, the model
-- missing) is returned, not raised, so the worker can record it and go on with the other watches.
CREATE FUNCTION clip_search_internal.watch_batch(target_table regclass, source_attnum smallint,
    target_attnum smallint, batch_size integer, OUT done bigint, OUT skipped bigint, OUT error text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    source_column text := clip_search_internal.column_name(target_table, source_attnum);
    target_column text := clip_search_internal.column_name(target_table, target_attnum);
BEGIN
    done := 0;
    skipped := 0;
    IF source_column IS NULL OR target_column IS NULL THEN
        error := format('42703 the %s column of the watch was dropped from %s',
                        CASE WHEN source_column IS NULL THEN 'source' ELSE 'target' END, target_table);
        RETURN;
    END IF;
    PERFORM clip_search_internal.forget_stale_failures(target_table, source_column, target_column);
    -- The table's triggers see the server's default search_path, as in any session of its owner without settings.
    SELECT b.done, b.skipped INTO done, skipped
    FROM clip_search_internal.embed_batch(target_table, source_column, target_column, batch_size, 'skip',
                                          (SELECT s.boot_val FROM pg_settings s WHERE s.name = 'search_path')) b;
EXCEPTION WHEN OTHERS THEN
    done := 0;
    skipped := 0;
    error := SQLSTATE || ' ' || SQLERRM;
END
$function$;
-- Whether this database's worker runs, and what it does: "active" while it embeds, "idle" while it waits, "not
-- running" without shared_preload_libraries or when clip.worker_databases does not name this database. A security
-- definer, since pg_stat_activity hides other roles' sessions' types and states from ordinary roles; it tells
-- them nothing else.
CREATE FUNCTION clip_search_internal.worker_state() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce((SELECT coalesce(a.state, 'running') FROM pg_stat_activity a
                     WHERE a.backend_type = 'clip_search worker' AND a.datname = current_database() LIMIT 1),
                    'not running')
$function$;
-- A watch's progress, if the current role may read its table: rows due, embedded and failed, the rate of the last
-- batch, the last error, and the worker's state. No row for a table dropped since (the worker skips it); a watch
-- whose column was dropped shows NULL for that column's name and the counts rather than failing.
CREATE FUNCTION clip_search_internal.watch_status(w clip_search_internal.watches,
    OUT source_column text, OUT target_column text, OUT rows_pending bigint, OUT rows_embedded bigint,
    OUT rows_failed bigint, OUT rows_embedded_by_worker bigint, OUT last_batch_rows_per_s numeric,
    OUT last_batch_at timestamptz, OUT last_error text, OUT last_error_at timestamptz, OUT worker_state text)
RETURNS SETOF record LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    pending bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = w.relation) OR NOT has_table_privilege(w.relation, 'SELECT') THEN
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
-- Progress and health of each watch in this database, for the tables the viewer may read. The view reads every
-- watch (as its owner) and watch_status leaves out the others; as a security barrier, it applies a viewer's own
-- conditions only to what that leaves, unless they are leakproof (relation = 'photos'::regclass is, and spares the
-- counting of the other tables).
CREATE VIEW @extschema@.clip_watch_status WITH (security_barrier) AS
SELECT w.relation, s.source_column, s.target_column, s.rows_pending, s.rows_embedded, s.rows_failed,
       s.rows_embedded_by_worker, s.last_batch_rows_per_s, s.last_batch_at, s.last_error, s.last_error_at,
       s.worker_state
FROM clip_search_internal.watches w CROSS JOIN LATERAL clip_search_internal.watch_status(w) s;
-- Anyone may watch or unwatch the tables whose owner's rights they have (and only those), and read the watches of
-- the tables they may read: what clip_watch_status shows them. (Policy expressions are bound when the policy is
-- created: every name in them is qualified.)
ALTER TABLE clip_search_internal.watches ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers ON clip_search_internal.watches FOR SELECT
    USING (pg_catalog.has_table_privilege(relation::pg_catalog.oid, 'SELECT'));
CREATE POLICY owners ON clip_search_internal.watches
    USING (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c
                                   WHERE c.oid OPERATOR(pg_catalog.=) relation::pg_catalog.oid), 'USAGE'))
    WITH CHECK (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c
                                        WHERE c.oid OPERATOR(pg_catalog.=) relation::pg_catalog.oid), 'USAGE'));
-- The counters, times and back-off are the worker's: a watch's owner cannot set them (nor move its watch first).
GRANT SELECT, INSERT (relation, source_attnum, target_attnum, pending_index), DELETE
    ON clip_search_internal.watches TO PUBLIC;
GRANT SELECT ON @extschema@.clip_watch_status TO PUBLIC;
