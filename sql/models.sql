-- The model registry: names for model directories, which every function takes as `model => 'name'`. Hand-written
-- SQL, included by src/registry.rs after sql/watch.sql (it uses the helpers' schema of sql/auto_embed.sql, and the
-- watches); names are resolved as there (see the top of sql/auto_embed.sql).
--
-- A name stands for one exact set of files, the manifest's sha256 (the manifest holds the sha256 of every file):
-- the embedding functions are IMMUTABLE, and indexes and generated columns store what they returned. Registering
-- other files under a name is refused unless the caller asks to replace it, also after the name was unregistered
-- (its row stays, marked); a backend that finds other files in a registered directory refuses to embed with them
-- (src/model_cache.rs). Only superusers register models, since that reads files of the server; every role may use
-- the registered ones.

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
