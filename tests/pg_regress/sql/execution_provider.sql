-- clip.execution_provider: what runs the batches of clip_backfill and the workers. A superuser's setting. With
-- cuda and ONNX Runtime's CPU build (the one installed here), a batch warns, once per tower, why CUDA cannot be
-- used and runs on the CPU: the same embeddings as the functions give. Queries' functions run on the CPU whatever
-- it says, without a warning.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
SELECT clip_info()->>'bulk_execution_provider' AS bulk;
SHOW clip.execution_provider;

CREATE ROLE clip_regress_gpu;
SET ROLE clip_regress_gpu;
SELECT pg_temp.error_of($$SET clip.execution_provider = cuda$$);
SELECT pg_temp.error_of($$SET clip.cuda_device = 1$$);
RESET ROLE;
DROP ROLE clip_regress_gpu;
SELECT pg_temp.error_of($$SET clip.execution_provider = tpu$$);

CREATE TABLE gpu_photos (id int PRIMARY KEY, caption text, image bytea, caption_embedding vector(32),
                         image_embedding vector(32));
INSERT INTO gpu_photos (id, caption, image)
SELECT row_number() OVER (ORDER BY name), 'a photo named ' || name, pg_read_binary_file(:'images' || name)
FROM pg_ls_dir(:'images') AS name WHERE name ~ '\.(png|jpg)$';

SET clip.execution_provider = cuda;
SELECT clip_info()->>'bulk_execution_provider' AS bulk;
-- No warning: a query's function runs on the CPU.
SELECT vector_dims(clip_embed_text('a cat')) AS dims;
SET client_min_messages = warning;  -- the progress NOTICEs count the fixtures
CALL clip_backfill('gpu_photos', 'caption', 'caption_embedding', batch_size => 8);
CALL clip_backfill('gpu_photos', 'image', 'image_embedding', batch_size => 8);
RESET client_min_messages;
SELECT count(*) AS rows, bool_and(caption_embedding = clip_embed_text(caption)) AS texts_as_on_the_cpu,
       bool_and(image_embedding = clip_embed_image(image)) AS images_as_on_the_cpu
FROM gpu_photos;
RESET clip.execution_provider;
DROP TABLE gpu_photos;
