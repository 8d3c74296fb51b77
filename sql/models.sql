-- The model registry: names for model directories, which every function takes as `model => 'name'`. Hand-written
-- SQL, included by src/registry.rs after sql/auto_embed.sql (whose schema it uses); names are resolved as there (see
-- the top of sql/auto_embed.sql).
--
-- A name stands for one exact set of files, the manifest's sha256 (the manifest holds the sha256 of every file):
-- the embedding functions are IMMUTABLE, and indexes and generated columns store what they returned. Registering
-- other files under a name is refused unless the caller asks to replace it; a backend that finds other files in a
-- registered directory refuses to embed with them (src/model_cache.rs). Only superusers register models, since that
-- reads files of the server; every role may use the registered ones.

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
-- calls an embedding function with the model's name, or, for the default model, without a model, and the watched
-- columns of the model (or, for the default model, of none). Descriptions, for messages.
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
    SELECT user_object FROM embedding WHERE strpos(expression, quote_literal(model_users.model) || '::name') > 0
    UNION
    SELECT user_object FROM embedding
    WHERE model_users.model = clip_search_internal.default_model_name() AND expression !~ '''::name\M'
    UNION
    SELECT format('watched column %s of %s', clip_search_internal.column_name(w.relation, w.target_attnum), w.relation)
    FROM clip_search_internal.watches w
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
