-- Watches: columns that the extension's background worker keeps embedded (src/worker.rs). Hand-written SQL, included
-- by src/worker.rs after sql/auto_embed.sql, whose batch function the worker runs.
--
-- A watched row is due when its target is NULL and its source is not: new rows, rows whose target was never filled,
-- and rows whose source an UPDATE changed (a trigger clears their target). The worker embeds due rows in batches,
-- each in a transaction of its own that locks the rows it embeds, so a row's target is always the embedding of the
-- source it has when the batch commits; a row deleted before its turn costs nothing.

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
