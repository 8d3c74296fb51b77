-- What a role that may create objects in public plants there, hoping that SQL of the extension run by a more
-- privileged role (a superuser's CALL, the background worker, ALTER EXTENSION UPDATE) resolves a name to it. Run
-- as that role, in a database where the extension lives in public (the worst case: its functions' own schema).
-- Every planted function, when it runs, draws a number from public.planted_calls (a sequence: the draw survives
-- a rollback), raises a WARNING that names it, and, if it runs as a superuser, makes its owner one.
-- It plants, in public:
--   operators  =, <>, <, >, <=, >=, +, -, *, /, || for every pair of 23 types that the extension's SQL handles (oid,
--              the reg* types, name, text, varchar, integers, numeric, float8, boolean, tid, arrays, jsonb,
--              timestamptz, interval, bytea), exact matches of pg_catalog's included;
--   functions  every built-in function name the extension's SQL calls, with no argument, one of each of those
--              types and two of the common ones, and the exact signatures of its calls of format and set_config
--              with more (the tests add jsonb_populate_record for each of the owner's tables' row types);
--   aggregates array_agg, string_agg, count, min and max over those types, and count(*);
--   overloads  of the extension's own functions (clip_embed_text(varchar), clip_embed_texts(varchar[]), ...),
--              which a call with an argument of another type than the function's would prefer.
-- Casts are no way in: a cast between built-in types needs a superuser, and the extension converts no type of a
-- user's.
CREATE SEQUENCE public.planted_calls;
GRANT USAGE ON SEQUENCE public.planted_calls TO PUBLIC;

-- The payload, as a function body returning NULL; owner is the planting role.
CREATE FUNCTION public.planted_body(signature text, owner text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog.format($body$
BEGIN
    PERFORM pg_catalog.nextval('public.planted_calls');
    RAISE WARNING 'planted %% ran as %%', %1$L, current_user;
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user) THEN
        EXECUTE %2$L;
    END IF;
    RETURN NULL;
END $body$, signature, pg_catalog.format('ALTER ROLE %I SUPERUSER', owner))
$$;

-- The planting itself runs with pg_catalog alone in its search_path, so that it does not call its own plants.
CREATE FUNCTION public.plant_shadows() RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $plant$
DECLARE
    types   text[] := ARRAY['oid', 'regclass', 'regtype', 'regproc', 'regrole', 'name', 'text', 'character varying',
                            '"char"', 'smallint', 'integer', 'bigint', 'numeric', 'double precision', 'boolean', 'tid',
                            'tid[]', 'oid[]', 'jsonb', 'timestamp with time zone', 'interval', 'bytea', 'text[]'];
    common  text[] := ARRAY['oid', 'regclass', 'regtype', 'name', 'text', 'smallint', 'integer', 'bigint', 'numeric',
                            'double precision', 'tid[]', 'oid[]', 'jsonb'];
    comparisons text[] := ARRAY['=', '<>', '<', '>', '<=', '>='];
    arithmetic  text[] := ARRAY['+', '-', '*', '/', '||'];
    -- Each name with the type its pg_catalog function returns, so that a plant also fits where the result is used.
    names   text[] := ARRAY['cardinality integer', 'md5 text', 'format text', 'jsonb_build_object jsonb',
                            'unnest text', 'has_any_column_privilege boolean', 'has_table_privilege boolean',
                            'pg_has_role boolean', 'round numeric', 'quote_literal text', 'quote_ident text',
                            'to_regclass regclass', 'set_config text', 'make_interval interval',
                            'date_part double precision', 'left text', 'nextval bigint', 'lower text',
                            'length integer', 'octet_length integer', 'array_length integer', 'concat text',
                            'concat_ws text', 'to_jsonb jsonb', 'pg_get_expr text', 'clock_timestamp timestamptz',
                            'now timestamptz', 'current_database name', 'current_setting text',
                            'pg_backend_pid integer'];
    owner   text := current_user;
    l text; r text; op text; fn text; name text; result text; entry text; n int := 0;
BEGIN
    FOREACH l IN ARRAY types LOOP
        FOREACH r IN ARRAY types LOOP
            n := n + 1;
            EXECUTE pg_catalog.format('CREATE FUNCTION public.planted_cmp_%s(%s, %s) RETURNS boolean LANGUAGE plpgsql AS %L',
                n, l, r, public.planted_body(pg_catalog.format('comparison(%s, %s)', l, r), owner));
            EXECUTE pg_catalog.format('CREATE FUNCTION public.planted_arith_%s(%s, %s) RETURNS %s LANGUAGE plpgsql AS %L',
                n, l, r, l, public.planted_body(pg_catalog.format('arithmetic(%s, %s)', l, r), owner));
            FOREACH op IN ARRAY comparisons LOOP
                EXECUTE pg_catalog.format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.planted_cmp_%s)',
                    op, l, r, n);
            END LOOP;
            FOREACH op IN ARRAY arithmetic LOOP
                EXECUTE pg_catalog.format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.planted_arith_%s)',
                    op, l, r, n);
            END LOOP;
        END LOOP;
    END LOOP;
    FOREACH entry IN ARRAY names LOOP
        name := split_part(entry, ' ', 1);
        result := substr(entry, length(name) + 2);
        EXECUTE pg_catalog.format('CREATE FUNCTION public.%I() RETURNS %s LANGUAGE plpgsql AS %L',
            name, result, public.planted_body(name || '()', owner));
        FOREACH l IN ARRAY types LOOP
            EXECUTE pg_catalog.format('CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
                name, l, result, public.planted_body(pg_catalog.format('%s(%s)', name, l), owner));
        END LOOP;
        FOREACH l IN ARRAY common LOOP
            FOREACH r IN ARRAY common LOOP
                EXECUTE pg_catalog.format('CREATE FUNCTION public.%I(%s, %s) RETURNS %s LANGUAGE plpgsql AS %L',
                    name, l, r, result, public.planted_body(pg_catalog.format('%s(%s, %s)', name, l, r), owner));
            END LOOP;
        END LOOP;
    END LOOP;
    -- Aggregates: a transition function that runs the payload.
    FOREACH l IN ARRAY types LOOP
        n := n + 1;
        EXECUTE pg_catalog.format('CREATE FUNCTION public.planted_step_%s(text, %s) RETURNS text LANGUAGE plpgsql AS %L',
            n, l, public.planted_body(pg_catalog.format('aggregate(%s)', l), owner));
        FOREACH name IN ARRAY ARRAY['array_agg', 'count', 'min', 'max'] LOOP
            EXECUTE pg_catalog.format('CREATE AGGREGATE public.%I(%s) (SFUNC = public.planted_step_%s, STYPE = text)',
                name, l, n);
        END LOOP;
        EXECUTE pg_catalog.format('CREATE FUNCTION public.planted_step_%s(text, %s, text) RETURNS text LANGUAGE plpgsql AS %L',
            n, l, public.planted_body(pg_catalog.format('string_agg(%s, text)', l), owner));
        EXECUTE pg_catalog.format('CREATE AGGREGATE public.string_agg(%s, text) (SFUNC = public.planted_step_%s, STYPE = text)',
            l, n);
    END LOOP;
    EXECUTE pg_catalog.format('CREATE FUNCTION public.planted_count_star(text) RETURNS text LANGUAGE plpgsql AS %L',
        public.planted_body('count(*)', owner));
    CREATE AGGREGATE public.count(*) (SFUNC = public.planted_count_star, STYPE = text);
    -- The exact signatures of the extension's calls with more arguments (format's, set_config's).
    FOREACH fn IN ARRAY ARRAY['format(text, regclass, text, text, oid, text, integer)', 'format(text, text, text, text, text)',
                              'format(text, text, text, text)', 'format(text, text, regclass)',
                              'format(text, text, text, regclass)', 'format(text, regclass, text, text, text)',
                              'format(text, regclass, text, text)', 'format(text, name, name)', 'format(text, name, text)',
                              'format(text, text, regclass, smallint)', 'format(text, name, regclass, text, text)',
                              'format(text, text, text, text, regclass)', 'format(text, regclass, text, regtype)',
                              'set_config(text, text, boolean)'] LOOP
        EXECUTE pg_catalog.format('CREATE FUNCTION public.%s RETURNS text LANGUAGE plpgsql AS %L',
            fn, public.planted_body(fn, owner));
    END LOOP;
    -- Overloads of the extension's own functions (it lives in public here).
    FOREACH fn IN ARRAY ARRAY['clip_embed_text(character varying)', 'clip_embed_text(character)',
                              'clip_embed_text(name)', 'clip_embed_texts(character varying[])',
                              'clip_embed_texts(character[])', 'clip_embed_image(oid)'] LOOP
        EXECUTE pg_catalog.format('CREATE FUNCTION public.%s RETURNS text LANGUAGE plpgsql AS %L',
            fn, public.planted_body(fn, owner));
    END LOOP;
END
$plant$;
DO $$ BEGIN PERFORM public.plant_shadows(); END $$;
DROP FUNCTION public.plant_shadows();
