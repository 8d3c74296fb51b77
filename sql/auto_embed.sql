-- Auto-embedding: a trigger function that fills a vector column on INSERT and UPDATE, and a procedure that
-- backfills existing rows in committed batches. Hand-written SQL, included by src/auto_embed.rs.

-- Fills TG_ARGV[1] (a vector column) from TG_ARGV[0] (a text, varchar or bytea column) with the text or the
-- image tower, chosen by the source column's type:
--   CREATE TRIGGER photos_embed BEFORE INSERT OR UPDATE OF image ON photos
--       FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('image', 'embedding');
-- On UPDATE it re-embeds only when the source changed. A failing embedding aborts the statement.
CREATE FUNCTION @extschema@.clip_embed_trigger() RETURNS trigger LANGUAGE plpgsql AS $function$
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
    source_type := @extschema@.clip_column_type(TG_RELID, source_column, 'clip_embed_trigger');
    PERFORM @extschema@.clip_column_type(TG_RELID, target_column, 'clip_embed_trigger');
    IF TG_OP = 'UPDATE' THEN
        EXECUTE format('SELECT ($1).%1$I IS NOT DISTINCT FROM ($2).%1$I', source_column) INTO unchanged USING NEW, OLD;
        IF unchanged THEN
            RETURN NEW;
        END IF;
    END IF;
    EXECUTE format('SELECT @extschema@.%s(($1).%I)::text', @extschema@.clip_embed_function(source_type, 'clip_embed_trigger', false),
                   source_column)
        INTO embedding USING NEW;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(target_column, embedding));
END
$function$;

-- The type of a table's column, or an error that names the caller.
CREATE FUNCTION @extschema@.clip_column_type(relation regclass, column_name text, caller text) RETURNS regtype
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
CREATE FUNCTION @extschema@.clip_embed_function(source_type regtype, caller text, batched boolean) RETURNS text
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

-- Embeds the rows of an existing table whose target is NULL and whose source is not, batch_size rows at a time,
-- committing after each batch and reporting progress as NOTICEs. Interrupted (cancelled, failed, server
-- stopped), it keeps what it committed; CALL it again to resume: nothing is embedded twice, nothing is missed.
-- Concurrent calls share the work (SKIP LOCKED). Must be CALLed outside an explicit transaction block.
CREATE PROCEDURE @extschema@.clip_backfill(target_table regclass, source_column text, target_column text,
                                           batch_size integer DEFAULT 64)
LANGUAGE plpgsql AS $procedure$
DECLARE
    embed_function text;
    total          bigint;
    done           bigint := 0;
    batch_rows     bigint;
    started        timestamptz := clock_timestamp();
    seconds        double precision;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'clip_backfill: batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    embed_function := @extschema@.clip_embed_function(
        @extschema@.clip_column_type(target_table, source_column, 'clip_backfill'), 'clip_backfill', true);
    PERFORM @extschema@.clip_column_type(target_table, target_column, 'clip_backfill');
    EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL', target_table, target_column, source_column)
        INTO total;
    RAISE NOTICE 'clip_backfill: % rows of % to embed', total, target_table;
    LOOP
        -- One array call per batch: one batched inference instead of batch_size single ones. The two
        -- aggregates see the rows in the same order, so ids and embeddings pair up.
        EXECUTE format($sql$
            WITH batch AS (
                SELECT ctid AS row_id, %2$I AS source FROM %1$s
                WHERE %3$I IS NULL AND %2$I IS NOT NULL LIMIT %4$s FOR UPDATE SKIP LOCKED
            ), embedded AS (
                SELECT array_agg(row_id) AS row_ids, @extschema@.%5$s(array_agg(source)) AS embeddings FROM batch
            )
            UPDATE %1$s AS t SET %3$I = e.embedding
            FROM embedded, unnest(embedded.row_ids, embedded.embeddings) AS e(row_id, embedding)
            WHERE t.ctid = e.row_id
        $sql$, target_table, source_column, target_column, batch_size, embed_function);
        GET DIAGNOSTICS batch_rows = ROW_COUNT;
        EXIT WHEN batch_rows = 0;
        COMMIT;
        done := done + batch_rows;
        seconds := extract(epoch FROM clock_timestamp() - started);
        RAISE NOTICE 'clip_backfill: % of % rows embedded', done, total
            USING DETAIL = format('%s rows/s since the start of this call', round((done / greatest(seconds, 1e-6))::numeric, 1));
    END LOOP;
END
$procedure$;
