-- clip_search 0.5.0 -> 0.6.0: a model registry (clip_register_model, clip_unregister_model, clip_models), a model
-- argument, `model => 'name'`, on every function that embeds, compares, classifies or tokenizes, and on clip_info,
-- and clip_clean_weights_cache. The model of clip.model_dir, when one is configured, is registered under its
-- manifest's name.
-- The definitions below repeat sql/models.sql, sql/comments.sql and pgrx's declarations of the C functions
-- (tests/pg_regress/sql/upgrade.sql compares an upgraded extension with a fresh install).
\echo Use "ALTER EXTENSION clip_search UPDATE TO '0.6.0'" to load this file. \quit

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
    registered_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (name OPERATOR(pg_catalog.~) '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$')
);
-- pg_dump keeps the registrations with the data.
SELECT pg_catalog.pg_extension_config_dump('clip_search_internal.models', '');
GRANT SELECT ON clip_search_internal.models TO PUBLIC;

-- What clip_register_model records of a model directory, once every file matched the manifest (src/registry.rs).
CREATE FUNCTION clip_search_internal.read_manifest(directory text) RETURNS jsonb
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'read_manifest_wrapper';
REVOKE ALL ON FUNCTION clip_search_internal.read_manifest(text) FROM PUBLIC;

-- Removes the prepared weights of the model in directory that no other model of this database uses and no process
-- maps, for clip_unregister_model (src/weights_cache.rs).
CREATE FUNCTION clip_search_internal.remove_model_weights(directory text) RETURNS bigint
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'remove_model_weights_wrapper';
REVOKE ALL ON FUNCTION clip_search_internal.remove_model_weights(text) FROM PUBLIC;

-- The model that the functions use without a model argument, if it is registered: clip.default_model, or else the
-- model registered with clip.model_dir's directory.
CREATE FUNCTION clip_search_internal.default_model_name() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    SELECT coalesce(nullif(current_setting('clip.default_model', true), ''),
                    (SELECT m.name FROM clip_search_internal.models m
                     WHERE m.directory = current_setting('clip.model_dir', true) ORDER BY m.name LIMIT 1))
$function$;

-- What in this database stores or indexes embeddings of model: indexes and generated columns whose expression
-- calls an embedding function with the model's name, or, for the default model, without a model; and, for the
-- default model, the watched columns. Descriptions, for messages.
CREATE FUNCTION clip_search_internal.model_users(model text) RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $function$
    WITH expressions AS (
        SELECT format('index %s', i.indexrelid::regclass) AS user_object,
               concat_ws(' WHERE ', pg_get_expr(i.indexprs, i.indrelid), pg_get_expr(i.indpred, i.indrelid)) AS expression
        FROM pg_index i WHERE i.indexprs IS NOT NULL OR i.indpred IS NOT NULL
        UNION ALL
        SELECT format('column %I of %s', a.attname, a.attrelid::regclass), pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
        WHERE a.attgenerated <> ''
    ), embedding AS (
        SELECT user_object, expression FROM expressions
        WHERE expression ~ '\mclip_(embed_texts?|embed_images?|similarity|classify)\('
    )
    SELECT user_object FROM embedding WHERE strpos(expression, quote_literal(model) || '::name') > 0
    UNION
    SELECT user_object FROM embedding
    WHERE model = clip_search_internal.default_model_name() AND expression !~ '''::name\M'
    UNION
    SELECT format('watched column %s of %s', clip_search_internal.column_name(w.relation, w.target_attnum), w.relation)
    FROM clip_search_internal.watches w WHERE model = clip_search_internal.default_model_name()
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
-- registered name are refused unless replace is true: what embeds with the name is listed either way.
CREATE FUNCTION @extschema@.clip_register_model(model text, directory text, replace boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    manifest   jsonb;
    registered clip_search_internal.models;
    users      text;
BEGIN
    PERFORM clip_search_internal.require_superuser('clip_register_model');
    IF model IS NULL OR model !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' THEN
        RAISE EXCEPTION 'clip_register_model: a model name is 1 to 63 letters, digits, ".", "_" or "-", starting with a letter or digit (got %)',
            quote_nullable(model) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF directory IS NULL OR left(directory, 1) <> '/' THEN
        RAISE EXCEPTION 'clip_register_model: the directory must be an absolute path (got %)', quote_nullable(directory)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    manifest := clip_search_internal.read_manifest(directory);
    SELECT * INTO registered FROM clip_search_internal.models m WHERE m.name = model FOR UPDATE;
    IF FOUND AND registered.manifest_sha256 <> manifest->>'sha256' THEN
        users := (SELECT string_agg(u, ', ') FROM clip_search_internal.model_users(model) u);
        IF NOT coalesce(replace, false) THEN
            RAISE EXCEPTION 'clip_register_model: model "%" is registered already, with other files', model
                USING ERRCODE = 'duplicate_object',
                      DETAIL = coalesce(format('Embeddings made with it are stored by: %s.', users),
                                        'No index, generated column or watch of this database names it.'),
                      HINT = 'The embeddings of a model name never change: register these files under another name, or pass replace => true and then re-embed what the old files made.';
        END IF;
        RAISE WARNING 'clip_register_model: model "%" now names other files, whose embeddings cannot be compared with the old ones', model
            USING DETAIL = coalesce(format('Embeddings made with the old files are stored by: %s.', users),
                                    'No index, generated column or watch of this database names it.'),
                  HINT = 'Re-embed them: REINDEX the indexes, and set the stored columns to NULL and embed them again.';
    END IF;
    INSERT INTO clip_search_internal.models AS m (name, directory, manifest_sha256, architecture, weights, embed_dim)
    VALUES (model, directory, manifest->>'sha256', manifest->>'architecture', manifest->>'weights',
            (manifest->>'embed_dim')::integer)
    ON CONFLICT (name) DO UPDATE
    SET directory = excluded.directory, manifest_sha256 = excluded.manifest_sha256,
        architecture = excluded.architecture, weights = excluded.weights, embed_dim = excluded.embed_dim,
        registered_at = excluded.registered_at
    WHERE (m.directory, m.manifest_sha256) IS DISTINCT FROM (excluded.directory, excluded.manifest_sha256);
END
$function$;

-- Removes a model's name, unless an index, generated column or watch of this database embeds with it, and its
-- prepared weights that nothing else uses.
CREATE FUNCTION @extschema@.clip_unregister_model(model text) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    users     text;
    directory text;
BEGIN
    PERFORM clip_search_internal.require_superuser('clip_unregister_model');
    users := (SELECT string_agg(u, ', ') FROM clip_search_internal.model_users(model) u);
    IF users IS NOT NULL THEN
        RAISE EXCEPTION 'clip_unregister_model: model "%" is in use', model
            USING ERRCODE = 'dependent_objects_still_exist', DETAIL = format('It is used by: %s.', users),
                  HINT = 'Drop them, or move them to another model, first.';
    END IF;
    DELETE FROM clip_search_internal.models m WHERE m.name = model RETURNING m.directory INTO directory;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'clip_unregister_model: model "%" is not registered', model USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM clip_search_internal.remove_model_weights(directory);
END
$function$;

-- The registered models, and which one the functions use without a model argument.
CREATE VIEW @extschema@.clip_models AS
SELECT m.name, m.architecture, m.weights, m.embed_dim,
       m.name IS NOT DISTINCT FROM clip_search_internal.default_model_name() AS is_default,
       m.directory, m.manifest_sha256, m.registered_at
FROM clip_search_internal.models m;
GRANT SELECT ON @extschema@.clip_models TO PUBLIC;

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
        CASE WHEN (manifest OPERATOR(pg_catalog.->>) 'architecture') OPERATOR(pg_catalog.~)
                  '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'
             THEN manifest OPERATOR(pg_catalog.->>) 'architecture' ELSE 'default' END,
        directory);
END
$register$;
