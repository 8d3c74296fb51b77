-- The PARALLEL SAFE claim, checked: with debug_parallel_query the queries below run in a parallel worker (which
-- loads its own model; EXPLAIN shows the Gather on top), and give what the leader gave.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
CREATE TABLE parallel_texts AS SELECT i AS id, 'parallel text number ' || i AS body FROM generate_series(1, 40) i;
CREATE TABLE parallel_serial AS
SELECT id, clip_embed_text(body) AS embedding, (clip_embed_texts(ARRAY[body]))[1] AS batch_embedding,
       clip_tokenize(body) AS ids
FROM parallel_texts;
ANALYZE parallel_texts, parallel_serial;
-- debug_parallel_query is PostgreSQL 16's name for force_parallel_mode.
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'debug_parallel_query'
                       ELSE 'force_parallel_mode' END, 'on', false) AS debug_parallel_query;
\set compare 'SELECT count(*) AS rows, bool_and(p.embedding = s.embedding) AS same_embeddings, bool_and(p.batch_embedding = s.batch_embedding) AS same_batch_embeddings, bool_and(p.ids = s.ids) AS same_token_ids FROM (SELECT id, clip_embed_text(body) AS embedding, (clip_embed_texts(ARRAY[body]))[1] AS batch_embedding, clip_tokenize(body) AS ids FROM parallel_texts) AS p JOIN parallel_serial AS s USING (id)'
EXPLAIN (COSTS OFF) :compare;
:compare;
EXPLAIN (COSTS OFF) SELECT clip_embed_image(pg_read_binary_file(:'images' || 'coffee_lossy_300x200.webp'));
SELECT vector_dims(clip_embed_image(pg_read_binary_file(:'images' || 'coffee_lossy_300x200.webp'))) AS image_dims,
       round(clip_similarity('[1,0]'::vector, '[1,1]'::vector)::numeric, 4) AS similarity,
       vector_dims(clip_blend(clip_embed_text('a'), clip_embed_text('b'))) AS blend_dims;
-- A parallel worker takes over the leader's settings, in an order of its own: a batch size above the default
-- ceiling, under a raised ceiling, does not keep it from starting.
SET clip.max_batch_size = 256;
SET clip.batch_size = 200;
SET clip.max_intra_op_threads = 8;
SET clip.intra_op_threads = 6;
:compare;
-- A registered model, named or as clip.default_model: the worker looks its name up itself.
\set tiny :abs_srcdir '/../fixtures/tiny-model'
SELECT clip_register_model('parallel-tiny', :'tiny');
SET clip.default_model = 'parallel-tiny';
\set compare_registered 'SELECT count(*) AS rows, bool_and(clip_embed_text(t.body, model => ''parallel-tiny'') = s.embedding) AS same_named, bool_and(clip_embed_text(t.body) = s.embedding) AS same_default FROM parallel_texts t JOIN parallel_serial s USING (id)'
EXPLAIN (COSTS OFF) :compare_registered;
:compare_registered;
RESET ALL;
SELECT clip_unregister_model('parallel-tiny');
DROP TABLE parallel_texts, parallel_serial;
