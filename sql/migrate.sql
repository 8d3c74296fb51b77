-- Migrations: moving a table's embeddings to another model while queries go on using them. Hand-written SQL,
-- included by src/migrate.rs after sql/watch.sql and sql/models.sql. Names are resolved as in sql/auto_embed.sql.
--
-- clip_migrate adds a column for the new model's embeddings, with the HNSW indexes of the target column, and has
-- the background worker fill it as a watch (sql/watch.sql): rows inserted or updated meanwhile are due in it as in
-- any watch, and the target column is kept as it was kept before. clip_migrate_switch then, in one transaction
-- under an ACCESS EXCLUSIVE lock, embeds the rows still due, renames the target column away (or drops it) and
-- gives its name to the new column, which its watch keeps embedded from then on. clip_migrate_cancel drops the new
-- column. Each step is a transaction, and the worker's batches are transactions: a crash at any point leaves a
-- migration that goes on where it was when the server is back.

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
