-- Watches: columns that the extension's background worker keeps embedded (src/worker.rs). Hand-written SQL, included
-- by src/worker.rs after sql/auto_embed.sql, whose batch function the worker runs. Names are resolved as there: see
-- the top of sql/auto_embed.sql.
--
-- A watched row is due when its target is NULL and its source is not: new rows, rows whose target was never filled,
-- and rows whose source an UPDATE changed (a trigger clears their target). The worker embeds due rows in batches,
-- each in a transaction of its own that locks the rows it embeds, so a row's target is always the embedding of the
-- source it has when the batch commits; a row deleted before its turn costs nothing.
--
-- A watch names its columns by attribute number, as PostgreSQL's own catalogs do, so it follows a column that is
-- renamed; one whose column was dropped is broken: the worker reports it once and tries it again less and less
-- often (see src/worker.rs), and clip_watch_status shows it with the worker's last error. A table may have a watch
-- per target column.

CREATE TABLE clip_search_internal.watches (
    relation             regclass    NOT NULL,
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
    next_try_at          timestamptz,                     -- the worker leaves a failing watch alone until then
    -- A registered model's name; NULL: the functions' default.
    model                text CHECK (clip_search_internal.is_model_name(model)),
    PRIMARY KEY (relation, target_attnum)
);

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
CREATE FUNCTION clip_search_internal.is_table(relation regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce((SELECT c.relkind IN ('r', 'p') FROM pg_class c WHERE c.oid = relation), false)
$function$;

-- Whether the current role has the rights of relation's owner: whose watches and migrations it may make and end.
CREATE FUNCTION clip_search_internal.owns(relation regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = relation), 'USAGE')
$function$;

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

-- Clears the target (attribute number TG_ARGV[0] of the watched table) of a watched row whose source an UPDATE
-- changed, so the worker embeds it again. The trigger's WHEN clause compares the source. On a partition the
-- trigger is a clone of the watched table's, and the partition's attribute numbers may differ from the watched
-- table's (a column dropped from it before it was attached): the column is found by its name in the watched table,
-- the table of the trigger's topmost parent. A target column dropped since leaves the row as it is (the watch is
-- broken, and clip_watch_status says so).
CREATE FUNCTION clip_search_internal.watch_trigger() RETURNS trigger LANGUAGE plpgsql
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
CREATE FUNCTION clip_search_internal.watch_trigger_name(target_attnum smallint) RETURNS name
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT ('clip_watch_' || target_attnum)::name
$function$;

-- Makes the trigger of a watch: BEFORE UPDATE OF the source, when it changed. PostgreSQL keeps the column list and
-- the WHEN clause by attribute number, so both follow a rename.
CREATE FUNCTION clip_search_internal.create_watch_trigger(relation regclass, source_attnum smallint,
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
CREATE FUNCTION clip_search_internal.check_owner(relation regclass, caller text) RETURNS void
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
CREATE FUNCTION clip_search_internal.pending_index_name(relation regclass, target_column text) RETURNS name
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
CREATE FUNCTION clip_search_internal.start_watch(target_table regclass, source_column text, target_column text,
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

-- Ends a watch: removes its trigger, the partial index it made, and its row. Embeddings stay.
CREATE FUNCTION clip_search_internal.stop_watch(watch clip_search_internal.watches) RETURNS void
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
CREATE FUNCTION @extschema@.clip_unwatch(target_table regclass) RETURNS void LANGUAGE plpgsql
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
CREATE FUNCTION clip_search_internal.watch_batch(target_table regclass, source_attnum smallint,
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

-- Whether the server starts a background worker for this database: clip_search in shared_preload_libraries
-- (which defines clip.worker_databases) and this database in clip.worker_databases, whose names are trimmed of
-- white space as the launcher trims them.
CREATE FUNCTION clip_search_internal.worker_configured() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce(bool_or(regexp_replace(d, '^\s+|\s+$', '', 'g') = current_database()), false)
    FROM unnest(string_to_array(current_setting('clip.worker_databases', true), ',')) AS d
$function$;

-- Whether this database's workers run, and what they do: "active" while one of them embeds, "idle" while they
-- wait, "not running" without shared_preload_libraries or when clip.worker_databases does not name this database.
-- A security definer, since pg_stat_activity hides other roles' sessions' types and states from ordinary roles; it
-- tells them nothing else.
CREATE FUNCTION clip_search_internal.worker_state() RETURNS text
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

-- Progress and health of each watch in this database, for the tables the viewer may read, and the time left at the
-- last batch's rate, times the workers that share the rows. The view reads every
-- watch (as its owner) and watch_status leaves out the others; as a security barrier, it applies a viewer's own
-- conditions only to what that leaves, unless they are leakproof (relation = 'photos'::regclass is, and spares the
-- counting of the other tables).
CREATE VIEW @extschema@.clip_watch_status WITH (security_barrier) AS
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

-- Anyone may watch or unwatch the tables whose owner's rights they have (and only those), and read the watches of
-- the tables they may read: what clip_watch_status shows them. (Policy expressions are bound when the policy is
-- created: every name in them is qualified.)
ALTER TABLE clip_search_internal.watches ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers ON clip_search_internal.watches FOR SELECT
    USING (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'SELECT'));
-- A row names a plain or partitioned table: status and switches read the relation as the role that asks, and a
-- view or a foreign table would run its owner's code as that role.
CREATE POLICY owners ON clip_search_internal.watches
    USING (clip_search_internal.owns(relation))
    WITH CHECK (clip_search_internal.owns(relation) AND clip_search_internal.is_table(relation));
-- The counters, times and back-off are the worker's: a watch's owner cannot set them (nor move its watch first).
GRANT SELECT, INSERT (relation, source_attnum, target_attnum, pending_index, model), DELETE
    ON clip_search_internal.watches TO PUBLIC;
ALTER TABLE clip_search_internal.migrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers ON clip_search_internal.migrations FOR SELECT
    USING (pg_catalog.has_any_column_privilege(relation::pg_catalog.oid, 'SELECT'));
CREATE POLICY owners ON clip_search_internal.migrations
    USING (clip_search_internal.owns(relation))
    WITH CHECK (clip_search_internal.owns(relation) AND clip_search_internal.is_table(relation));
GRANT SELECT, INSERT (relation, source_attnum, target_attnum, new_attnum, model), DELETE
    ON clip_search_internal.migrations TO PUBLIC;
GRANT SELECT ON @extschema@.clip_watch_status TO PUBLIC;
