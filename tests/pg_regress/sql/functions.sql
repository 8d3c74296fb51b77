-- The SQL surface: signatures, volatility, strictness, dimensions, and the tokenizer.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup

-- The C functions users call are PARALLEL SAFE and STRICT (but where a model or a language may be NULL), the
-- embedding ones IMMUTABLE (HNSW, generated columns); the bulk paths' array functions are STABLE (they follow
-- clip.execution_provider) and PARALLEL RESTRICTED; the trigger function, the backfill procedure and their helpers
-- are PL/pgSQL. The helpers are in the extension's own schema, not with the user's functions.
SELECT p.pronamespace::regnamespace AS schema, p.oid::regprocedure AS function, p.prorettype::regtype AS returns,
       p.provolatile AS volatility, p.proparallel AS parallel, p.proisstrict AS strict
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'clip_search'
ORDER BY p.pronamespace::regnamespace::text, p.oid::regprocedure::text;
-- Every object of the extension other than its functions: the helpers' schema, the failures table, the watches
-- and their status view. (PostgreSQL 18 also records the row and array types of its tables and views as members:
-- left out here, as earlier versions do not record them.)
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object
FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'clip_search'
WHERE d.deptype = 'e' AND d.classid <> 'pg_proc'::regclass
  AND NOT EXISTS (SELECT FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
                  WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid
                    AND (t.typcategory = 'A' OR c.relkind IN ('r', 'p', 'v', 'm')))
ORDER BY 1;

-- Every public function, procedure, table and view has a description (psql's \df+, obj_description()).
SELECT pg_describe_object(d.classid, d.objid, 0) AS undescribed
FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'clip_search'
WHERE d.deptype = 'e' AND d.classid IN ('pg_proc'::regclass, 'pg_class'::regclass)
  AND NOT EXISTS (SELECT FROM pg_description c WHERE c.classoid = d.classid AND c.objoid = d.objid AND c.objsubid = 0)
  AND coalesce((SELECT pronamespace FROM pg_proc WHERE oid = d.objid AND d.classid = 'pg_proc'::regclass),
               (SELECT relnamespace FROM pg_class WHERE oid = d.objid AND d.classid = 'pg_class'::regclass))
      <> 'clip_search_internal'::regnamespace;
SELECT obj_description('clip_embed_text(text)'::regprocedure) AS clip_embed_text;

-- NULL in, NULL out.
SELECT clip_embed_text(NULL) IS NULL AS text_null, clip_embed_image(NULL) IS NULL AS image_null,
       clip_similarity(NULL::text, NULL::bytea) IS NULL AS similarity_null;

-- Unit vectors of the model's dimension, for any text the reference accepts. Unaligned: psql's width of an emoji
-- depends on its version.
\pset format unaligned
SELECT left(t, 20) AS text, vector_dims(clip_embed_text(t)) AS dims, round(vector_norm(clip_embed_text(t))::numeric, 4) AS norm
FROM unnest(ARRAY['a photo of a cat', '', '   ', E'tab\there', '🚀🌕', 'صورة قطة', repeat('long ', 500)]) AS t;
\pset format aligned

-- A text's embedding does not depend on anything else in the statement.
SELECT clip_embed_text('a dog') = clip_embed_text('a dog') AS deterministic,
       clip_embed_text('a dog') = clip_embed_text('A DOG') AS case_insensitive,
       clip_embed_text('a dog') <> clip_embed_text('a cat') AS distinct_texts;

-- Token ids, as open_clip's tokenizer gives them (start 49406, end 49407).
SELECT clip_tokenize('a photo of a cat') AS ids;
SELECT clip_tokenize('') AS empty, clip_tokenize('Tom &amp; Jerry') AS entity;
SELECT array_length(clip_tokenize(repeat('word ', 200)), 1) AS truncated_length,
       (clip_tokenize(repeat('word ', 200)))[77] AS last_id;

-- clip_similarity of two vectors is 1 - cosine distance, as double precision, to within float rounding; NaN for a
-- zero vector, as pgvector's distance gives.
SELECT round(clip_similarity('[1,0,0]'::vector, '[1,1,0]'::vector)::numeric, 4) AS similarity,
       round((1 - ('[1,0,0]'::vector <=> '[1,1,0]'::vector))::numeric, 4) AS one_minus_distance;
SELECT pg_typeof(clip_similarity('[1,0]'::vector, '[0,1]'::vector)) AS returns,
       max(abs(clip_similarity(a, b) - (1 - (a <=> b)))) < 1e-6 AS equals_one_minus_distance
FROM (SELECT clip_embed_text('text ' || i) AS a, clip_embed_text('other ' || i) AS b FROM generate_series(1, 20) i) v;
SELECT clip_similarity('[0,0,0]'::vector, '[1,1,0]'::vector) AS zero_vector,
       1 - ('[0,0,0]'::vector <=> '[1,1,0]'::vector) AS one_minus_distance,
       clip_similarity('[1,2,3]'::vector, '[-2,-4,-6]'::vector) AS opposite;
SELECT clip_similarity('[1,0]'::vector, '[1,0,0]'::vector);

-- What produced the vectors.
SELECT key FROM jsonb_object_keys(clip_info()) AS key ORDER BY key;
SELECT clip_info()->>'model' AS model, clip_info()->>'embed_dim' AS dim, clip_info()->>'context_length' AS ctx,
       clip_info()->>'image_size' AS image_size, clip_info()->>'onnxruntime_version' AS ort,
       clip_info()->>'intra_op_threads' AS threads;
