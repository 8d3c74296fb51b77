-- clip_search 0.2.0 -> 0.3.0: the auto-embedding helpers move to the extension's own schema clip_search_internal
-- (out of the user's list of functions); clip_backfill is correct on partitioned and inheritance tables, names
-- the key of a row it cannot embed, and can skip such rows (on_error => 'skip'), recording them in the new table
-- clip_backfill_failures; clip_watch has the background worker keep a column embedded; clip_embed_text takes a
-- language for models that mark it (NLLB). Stored vectors stay valid.
-- After that function, this file repeats sql/auto_embed.sql, except that the trigger function, which user
-- triggers depend on, is replaced rather than created, and then sql/watch.sql.
\echo Use "ALTER EXTENSION clip_search UPDATE TO '0.3.0'" to load this file. \quit

CREATE FUNCTION @extschema@."clip_embed_text"(
	"input" TEXT, /* &str */
	"language" TEXT /* &str */
) RETURNS vector /* Vector */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'clip_embed_text_in_wrapper';

DROP FUNCTION @extschema@.clip_column_type(regclass, text, text);
DROP FUNCTION @extschema@.clip_embed_function(regtype, text, boolean);
DROP PROCEDURE @extschema@.clip_backfill(regclass, text, text, integer);

-- The helpers live in a schema of their own, out of the user's list of functions. It belongs to the extension
-- (DROP EXTENSION drops it). Everyone may use it: the trigger and the backfill run as the user who fires or calls
-- them.
CREATE SCHEMA clip_search_internal;
COMMENT ON SCHEMA clip_search_internal IS 'helpers of the clip_search extension; not an interface';
GRANT USAGE ON SCHEMA clip_search_internal TO PUBLIC;

-- Fills TG_ARGV[1] (a vector column) from TG_ARGV[0] (a text, varchar or bytea column) with the text or the
-- image tower, chosen by the source column's type:
--   CREATE TRIGGER photos_embed BEFORE INSERT OR UPDATE OF image ON photos
--       FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('image', 'embedding');
-- On UPDATE it re-embeds only when the source changed. A failing embedding aborts the statement.
CREATE OR REPLACE FUNCTION @extschema@.clip_embed_trigger() RETURNS trigger LANGUAGE plpgsql AS $function$
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
    source_type := clip_search_internal.column_type(TG_RELID, source_column, 'clip_embed_trigger');
    PERFORM clip_search_internal.column_type(TG_RELID, target_column, 'clip_embed_trigger');
    IF TG_OP = 'UPDATE' THEN
        EXECUTE format('SELECT ($1).%1$I IS NOT DISTINCT FROM ($2).%1$I', source_column) INTO unchanged USING NEW, OLD;
        IF unchanged THEN
            RETURN NEW;
        END IF;
    END IF;
    EXECUTE format('SELECT @extschema@.%s(($1).%I)::text',
                   clip_search_internal.embed_function(source_type, 'clip_embed_trigger', false), source_column)
        INTO embedding USING NEW;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(target_column, embedding));
END
$function$;

-- The type of a table's column, or an error that names the caller.
CREATE FUNCTION clip_search_internal.column_type(relation regclass, column_name text, caller text) RETURNS regtype
LANGUAGE plpgsql STABLE AS $function$
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

-- Which embedding function serves a source column type: the single or the array form.
CREATE FUNCTION clip_search_internal.embed_function(source_type regtype, caller text, batched boolean) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $function$
BEGIN
    IF source_type IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
        RETURN CASE WHEN batched THEN 'clip_embed_texts' ELSE 'clip_embed_text' END;
    ELSIF source_type = 'bytea'::regtype THEN
        RETURN CASE WHEN batched THEN 'clip_embed_images' ELSE 'clip_embed_image' END;
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
    failed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (relation, source_column, row_table, row_key)
);
ALTER TABLE @extschema@.clip_backfill_failures ENABLE ROW LEVEL SECURITY;
-- Column privileges count: a role granted UPDATE on the target column only may backfill it.
CREATE POLICY readers ON @extschema@.clip_backfill_failures FOR SELECT
    USING (has_any_column_privilege(relation, 'SELECT'));
CREATE POLICY backfillers ON @extschema@.clip_backfill_failures
    USING (has_any_column_privilege(relation, 'UPDATE')) WITH CHECK (has_any_column_privilege(relation, 'UPDATE'));
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.clip_backfill_failures TO PUBLIC;

-- One batch of clip_backfill and of the background worker's watches (sql/watch.sql): locks up to batch_size rows of
-- target_table (partitions and inheriting tables included) whose target is NULL, whose source is not, and which are
-- not a recorded failure with their current source, and embeds them in one array call. If a source in the batch
-- cannot be embedded, the rows are embedded one by one: with on_error => 'skip' the bad ones are recorded in
-- clip_backfill_failures; with 'stop' the first bad one ends the batch and is returned in failed_* (the rows before
-- it stay embedded, for the caller to commit). done = 0 and skipped = 0 without a failure: nothing is left to do.
CREATE FUNCTION clip_search_internal.embed_batch(target_table regclass, source_column text, target_column text,
    batch_size integer, on_error text, OUT done bigint, OUT skipped bigint, OUT failed_table regclass,
    OUT failed_key jsonb, OUT failed_state text, OUT failed_message text)
LANGUAGE plpgsql AS $function$
DECLARE
    source_type    regtype;
    target_type    regtype;
    embed_batch    text;     -- the array form of the embedding function, for a whole batch
    embed_row      text;     -- its single form, for the rows of a failed batch one by one
    row_key        text;     -- SQL expression of the row t's key: its primary key, else its ctid
    row_tables     oid[];    -- the batch's rows: (tableoid, ctid) is unique across partitions, ctid alone is not
    row_ids        tid[];
    embedding      text;
    failed_md5     text;
BEGIN
    done := 0;
    skipped := 0;
    source_type := clip_search_internal.column_type(target_table, source_column, 'clip_backfill');
    embed_batch := clip_search_internal.embed_function(source_type, 'clip_backfill', true);
    embed_row := clip_search_internal.embed_function(source_type, 'clip_backfill', false);
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
    BEGIN
        -- One array call per batch: one batched inference instead of batch_size single ones. The three aggregates
        -- see the rows in the same order, so rows and embeddings pair up.
        EXECUTE format($sql$
            WITH batch AS (
                SELECT t.tableoid AS row_table, t.ctid AS row_id, t.%2$I AS source
                FROM %1$s t JOIN unnest($1, $2) AS b(row_table, row_id) ON t.tableoid = b.row_table AND t.ctid = b.row_id
            ), embedded AS (
                SELECT array_agg(row_table) AS row_tables, array_agg(row_id) AS row_ids,
                       @extschema@.%4$s(array_agg(source)) AS embeddings
                FROM batch
            )
            UPDATE %1$s AS t SET %3$I = e.embedding
            FROM embedded, unnest(embedded.row_tables, embedded.row_ids, embedded.embeddings) AS e(row_table, row_id, embedding)
            WHERE t.tableoid = e.row_table AND t.ctid = e.row_id
        $sql$, target_table, source_column, target_column, embed_batch)
            USING row_tables, row_ids;
        GET DIAGNOSTICS done = ROW_COUNT;
    EXCEPTION WHEN data_exception OR feature_not_supported OR program_limit_exceeded THEN
        -- A source in the batch cannot be embedded: embed the rows one by one to find which. Only the embedding is
        -- inside the subtransaction, so an error of the UPDATE itself (say, a vector column of another dimension)
        -- is not taken for a bad row.
        done := 0;
        FOR i IN 1 .. cardinality(row_ids) LOOP
            BEGIN
                EXECUTE format('SELECT @extschema@.%s(t.%I)::text FROM %s t WHERE t.tableoid = $1 AND t.ctid = $2',
                               embed_row, source_column, target_table)
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
            EXECUTE format('UPDATE %s t SET %I = $3::%s WHERE t.tableoid = $1 AND t.ctid = $2',
                           target_table, target_column, target_type)
                USING row_tables[i], row_ids[i], embedding;
            done := done + 1;
        END LOOP;
        failed_key := NULL;
        failed_state := NULL;
        failed_message := NULL;
    END;
END
$function$;

-- SQL expression of the key of a row t of relation: its primary key as jsonb, else {"ctid": ...}.
CREATE FUNCTION clip_search_internal.row_key(relation regclass) RETURNS text LANGUAGE sql STABLE AS $function$
    SELECT coalesce(
        (SELECT 'jsonb_build_object(' || string_agg(format('%L, t.%I', a.attname, a.attname), ', ' ORDER BY k.n) || ')'
         FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = relation AND i.indisprimary),
        'jsonb_build_object(''ctid'', t.ctid)')
$function$;

-- Removes the records of clip_backfill_failures of relation's source column whose row changed, was embedded or is
-- gone, so that the row is tried again.
CREATE FUNCTION clip_search_internal.forget_stale_failures(relation regclass, source_column text, target_column text)
RETURNS void LANGUAGE plpgsql AS $function$
BEGIN
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

-- Embeds the rows of an existing table (partitions and inheriting tables included) whose target is NULL and whose
-- source is not, batch_size rows at a time, committing after each batch and reporting progress as NOTICEs.
-- Interrupted (cancelled, failed, server stopped), it keeps what it committed; CALL it again to resume: nothing is
-- embedded twice, nothing is missed. Concurrent calls share the work (SKIP LOCKED). A row whose source cannot be
-- embedded stops the call with an error that names the row's key (on_error => 'stop'), or is recorded in
-- clip_backfill_failures and left out (on_error => 'skip'). Must be CALLed outside an explicit transaction block.
CREATE PROCEDURE @extschema@.clip_backfill(target_table regclass, source_column text, target_column text,
                                           batch_size integer DEFAULT 64, on_error text DEFAULT 'stop')
LANGUAGE plpgsql AS $procedure$
DECLARE
    recorded bigint;
    total    bigint;
    done     bigint := 0;
    skipped  bigint := 0;
    batch    record;
    started  timestamptz := clock_timestamp();
    seconds  double precision;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'clip_backfill: batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF on_error IS NULL OR on_error NOT IN ('stop', 'skip') THEN
        RAISE EXCEPTION 'clip_backfill: on_error must be ''stop'' or ''skip'', not %', coalesce(quote_literal(on_error), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM clip_search_internal.embed_function(
        clip_search_internal.column_type(target_table, source_column, 'clip_backfill'), 'clip_backfill', true);
    PERFORM clip_search_internal.column_type(target_table, target_column, 'clip_backfill');
    PERFORM clip_search_internal.forget_stale_failures(target_table, source_column, target_column);
    SELECT count(*) INTO recorded FROM @extschema@.clip_backfill_failures f
    WHERE f.relation = target_table AND f.source_column = clip_backfill.source_column;
    EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL', target_table, target_column, source_column)
        INTO total;
    total := total - recorded;
    RAISE NOTICE 'clip_backfill: % rows of % to embed', total, target_table;
    IF recorded > 0 THEN
        RAISE NOTICE 'clip_backfill: % rows left out: they failed before with the same source (see clip_backfill_failures)', recorded;
    END IF;
    LOOP
        SELECT * INTO batch FROM clip_search_internal.embed_batch(target_table, source_column, target_column, batch_size, on_error);
        EXIT WHEN batch.done = 0 AND batch.skipped = 0 AND batch.failed_table IS NULL;
        COMMIT;
        done := done + batch.done;
        skipped := skipped + batch.skipped;
        IF batch.failed_table IS NOT NULL THEN
            RAISE EXCEPTION 'clip_backfill: cannot embed the row % of %: %', batch.failed_key, batch.failed_table, batch.failed_message
                USING ERRCODE = batch.failed_state,
                      HINT = 'Fix or clear its source and call clip_backfill again, or call it with on_error => ''skip'' to record such rows in clip_backfill_failures and go on.';
        END IF;
        seconds := extract(epoch FROM clock_timestamp() - started);
        RAISE NOTICE 'clip_backfill: % of % rows embedded', done, total
            USING DETAIL = format('%s rows/s since the start of this call', round((done / greatest(seconds, 1e-6))::numeric, 1));
    END LOOP;
    IF skipped > 0 THEN
        RAISE WARNING 'clip_backfill: % rows of % could not be embedded and were left out', skipped, target_table
            USING HINT = 'SELECT * FROM clip_backfill_failures shows them and why; fix their sources and call clip_backfill again.';
    END IF;
END
$procedure$;

-- sql/watch.sql

CREATE TABLE clip_search_internal.watches (
    relation        regclass    PRIMARY KEY,
    source_column   text        NOT NULL,
    target_column   text        NOT NULL,
    pending_index   regclass    NOT NULL,  -- the partial index that finds due rows
    watched_at      timestamptz NOT NULL DEFAULT now(),
    rows_embedded   bigint      NOT NULL DEFAULT 0,
    rows_failed     bigint      NOT NULL DEFAULT 0,
    last_batch_at   timestamptz,
    last_batch_rate double precision,    -- rows per second of the last batch
    last_error      text,
    last_error_at   timestamptz
);

-- Clears the target of a watched row whose source an UPDATE changed, so the worker embeds it again.
CREATE FUNCTION clip_search_internal.watch_trigger() RETURNS trigger LANGUAGE plpgsql AS $function$
DECLARE
    unchanged boolean;
BEGIN
    EXECUTE format('SELECT ($1).%1$I IS NOT DISTINCT FROM ($2).%1$I', TG_ARGV[0]) INTO unchanged USING NEW, OLD;
    IF unchanged THEN
        RETURN NEW;
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[1], NULL));
END
$function$;

-- An error unless the current role has the rights of relation's owner.
CREATE FUNCTION clip_search_internal.check_owner(relation regclass, caller text) RETURNS void
LANGUAGE plpgsql STABLE AS $function$
BEGIN
    IF NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = relation), 'USAGE') THEN
        RAISE EXCEPTION '%: must be the owner of table %', caller, relation USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$function$;

-- Has the background worker keep target_column embedded from source_column in target_table (a table or a
-- partitioned table; not a parent of inheriting tables, whose updates its trigger would not see): rows inserted or
-- updated from now on, and the rows whose target is NULL today. Creates a trigger and a small partial index on the table; needs the rights to create them (its owner).
-- The worker embeds as the table's owner. Rows that cannot be embedded are recorded in clip_backfill_failures and
-- tried again when their source changes. Progress: clip_watch_status.
CREATE FUNCTION @extschema@.clip_watch(target_table regclass, source_column text, target_column text)
RETURNS void LANGUAGE plpgsql AS $function$
DECLARE
    -- As type name, cut to 63 bytes the way PostgreSQL cuts the index's name (text's left() counts characters).
    index_name name := format('%s_%s_clip_pending', (SELECT relname FROM pg_class WHERE oid = target_table),
                              target_column);
    index_oid  regclass;
BEGIN
    PERFORM clip_search_internal.check_owner(target_table, 'clip_watch');
    PERFORM clip_search_internal.embed_function(
        clip_search_internal.column_type(target_table, source_column, 'clip_watch'), 'clip_watch', true);
    PERFORM clip_search_internal.column_type(target_table, target_column, 'clip_watch');
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
    EXECUTE format('CREATE TRIGGER clip_watch BEFORE UPDATE OF %I ON %s FOR EACH ROW
                    EXECUTE FUNCTION clip_search_internal.watch_trigger(%L, %L)',
                   source_column, target_table, source_column, target_column);
    EXECUTE format('CREATE INDEX %I ON %s ((%I IS NULL)) WHERE %I IS NULL',
                   index_name, target_table, target_column, target_column);
    SELECT c.oid INTO index_oid FROM pg_class c
    WHERE c.relname = index_name AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = target_table);
    INSERT INTO clip_search_internal.watches (relation, source_column, target_column, pending_index)
    VALUES (target_table, source_column, target_column, index_oid);
END
$function$;

-- Stops watching target_table: removes the trigger and the partial index clip_watch made. Embeddings stay.
CREATE FUNCTION @extschema@.clip_unwatch(target_table regclass) RETURNS void LANGUAGE plpgsql AS $function$
DECLARE
    watch clip_search_internal.watches;
BEGIN
    PERFORM clip_search_internal.check_owner(target_table, 'clip_unwatch');
    DELETE FROM clip_search_internal.watches w WHERE w.relation = target_table RETURNING * INTO watch;
    IF watch IS NULL THEN
        RAISE EXCEPTION 'clip_unwatch: % is not watched', target_table USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP TRIGGER clip_watch ON %s', target_table);
    -- Only an index of this table: a watch's row inserted by hand may name any index.
    IF EXISTS (SELECT FROM pg_index WHERE indexrelid = watch.pending_index AND indrelid = target_table) THEN
        EXECUTE format('DROP INDEX %s', watch.pending_index);
    END IF;
END
$function$;

-- One batch of a watch, run by the worker as the table's owner: embeds up to batch_size due rows, records those that
-- cannot be embedded, and returns how many it embedded and skipped; any other error is returned, not raised, so
-- the worker can record it and go on with the other watches.
CREATE FUNCTION clip_search_internal.watch_batch(target_table regclass, source_column text, target_column text,
    batch_size integer, OUT done bigint, OUT skipped bigint, OUT error text)
LANGUAGE plpgsql AS $function$
BEGIN
    PERFORM clip_search_internal.forget_stale_failures(target_table, source_column, target_column);
    SELECT b.done, b.skipped INTO done, skipped
    FROM clip_search_internal.embed_batch(target_table, source_column, target_column, batch_size, 'skip') b;
EXCEPTION WHEN OTHERS THEN
    done := 0;
    skipped := 0;
    error := SQLSTATE || ' ' || SQLERRM;
END
$function$;

-- The rows of a watched column that are due and that are embedded.
CREATE FUNCTION clip_search_internal.watch_counts(relation regclass, source_column text, target_column text,
    OUT pending bigint, OUT embedded bigint)
LANGUAGE plpgsql STABLE AS $function$
BEGIN
    EXECUTE format('SELECT count(*) FILTER (WHERE %2$I IS NULL AND %1$I IS NOT NULL), count(%2$I) FROM %3$s',
                   source_column, target_column, relation)
        INTO pending, embedded;
END
$function$;

-- Progress and health of each watch in this database: rows due, embedded and failed, the rate of the last batch,
-- the last error, and the worker's state (from pg_stat_activity: "active" while it embeds, "idle" while it waits,
-- "running" for a role that may not see other sessions' state, "not running" without shared_preload_libraries or
-- when clip.worker_databases does not name this database). A security barrier: the rows of tables the viewer may
-- not read stay hidden from functions in the viewer's own conditions.
CREATE VIEW @extschema@.clip_watch_status WITH (security_barrier) AS
SELECT w.relation, w.source_column, w.target_column,
       greatest(c.pending - coalesce(f.failed, 0), 0) AS rows_pending,
       c.embedded AS rows_embedded,
       coalesce(f.failed, 0) AS rows_failed,
       w.rows_embedded AS rows_embedded_by_worker,
       round(w.last_batch_rate::numeric, 1) AS last_batch_rows_per_s,
       w.last_batch_at, w.last_error, w.last_error_at,
       coalesce((SELECT coalesce(a.state, 'running') FROM pg_stat_activity a
                 WHERE a.backend_type = 'clip_search worker' AND a.datname = current_database() LIMIT 1),
                'not running') AS worker_state
FROM clip_search_internal.watches w
CROSS JOIN LATERAL clip_search_internal.watch_counts(w.relation, w.source_column, w.target_column) c
LEFT JOIN LATERAL (SELECT count(*) AS failed FROM @extschema@.clip_backfill_failures f
                   WHERE f.relation = w.relation AND f.source_column = w.source_column) f ON true
-- Tables the viewer may read; a watched table dropped since leaves a row the worker skips.
WHERE EXISTS (SELECT FROM pg_class WHERE oid = w.relation) AND has_table_privilege(w.relation, 'SELECT');

-- Anyone may watch or unwatch the tables whose owner's rights they have (and only those).
ALTER TABLE clip_search_internal.watches ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers ON clip_search_internal.watches FOR SELECT USING (true);
CREATE POLICY owners ON clip_search_internal.watches
    USING (pg_has_role((SELECT relowner FROM pg_class WHERE oid = relation), 'USAGE'))
    WITH CHECK (pg_has_role((SELECT relowner FROM pg_class WHERE oid = relation), 'USAGE'));
-- The counters and times are the worker's: a watch's owner cannot set them (nor move its watch first).
GRANT SELECT, INSERT (relation, source_column, target_column, pending_index), DELETE
    ON clip_search_internal.watches TO PUBLIC;
GRANT SELECT ON @extschema@.clip_watch_status TO PUBLIC;
