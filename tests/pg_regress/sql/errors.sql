-- Bad input gives a clear error with its own SQLSTATE, and the session stays usable.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup

SELECT pg_temp.error_of($$SELECT clip_embed_image(''::bytea)$$);
SELECT pg_temp.error_of($$SELECT clip_embed_image('not an image at all'::bytea)$$);
SELECT pg_temp.error_of($$SELECT clip_embed_image('\x89504e470d0a1a0a0000'::bytea)$$);
SELECT pg_temp.error_of($$SELECT clip_embed_image('\xffd8ffe000104a464946'::bytea)$$);
SELECT pg_temp.error_of($$SELECT clip_embed_image(convert_to('<svg xmlns="http://www.w3.org/2000/svg"></svg>', 'UTF8'))$$);
SELECT pg_temp.error_of($$SELECT clip_embed_image(convert_to('%PDF-1.4 ...', 'UTF8'))$$);
-- A PNG header that declares 100000 x 100000 pixels: refused before any pixel is allocated.
SELECT pg_temp.error_of($$SELECT clip_embed_image('\x89504e470d0a1a0a0000000d49484452000186a0000186a00806000000a8520bc8'::bytea)$$);
-- The same for a real image once the limit is below its size; a superuser can change the limit.
SET clip.max_image_pixels = 1000;
SELECT pg_temp.error_of(format('SELECT clip_embed_image(pg_read_binary_file(%L))', :'images' || 'astronaut_rgb_posterized_300x250.png'));
RESET clip.max_image_pixels;
SELECT vector_dims(clip_embed_image(pg_read_binary_file(:'images' || 'astronaut_rgb_posterized_300x250.png'))) AS dims_after_errors;

-- Dimension mismatch.
SELECT pg_temp.error_of($$SELECT clip_similarity('[1,2]'::vector, '[1,2,3]'::vector)$$);

-- Settings that pick files, libraries or memory limits are for superusers only.
CREATE ROLE clip_regress_user;
SET ROLE clip_regress_user;
SELECT pg_temp.error_of($$SET clip.model_dir = '/etc'$$);
SELECT pg_temp.error_of($$SET clip.onnxruntime_library = '/tmp/evil.so'$$);
SELECT pg_temp.error_of($$SET clip.max_image_pixels = 2000000000$$);
SELECT pg_temp.error_of($$SET clip.max_batch_size = 1024$$);
SELECT pg_temp.error_of($$SET clip.max_intra_op_threads = 64$$);
SET clip.intra_op_threads = 2;
SELECT pg_temp.error_of($$SET clip.intra_op_threads = 0$$);
-- An ordinary role may not SET more than the superuser's ceilings: the refusal names the ceiling.
SET clip.batch_size = 1024;
SET clip.intra_op_threads = 64;
SET clip.batch_size = 64;
SHOW clip.batch_size;
RESET clip.batch_size;
RESET clip.intra_op_threads;
-- Ordinary use needs no privilege: embeddings come from the values given, never from a path or a URL.
SELECT vector_dims(clip_embed_text('an ordinary user embeds text')) AS dims_as_ordinary_user;
RESET ROLE;
DROP ROLE clip_regress_user;
-- A ceiling lowered under a value already set caps it where it is used (clip_info shows what is in force).
SET clip.batch_size = 16;
SET clip.max_batch_size = 8;
SELECT current_setting('clip.batch_size') AS batch_size_set, clip_info()->>'batch_size' AS batch_size_in_force;
RESET clip.max_batch_size;
RESET clip.batch_size;

-- A bad element of an array names its index in the message and, for programs, in the DETAIL.
DO $$
DECLARE detail text;
BEGIN
  PERFORM clip_embed_images(ARRAY[NULL, 'not an image'::bytea]);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
  RAISE NOTICE 'SQLSTATE %, message: %, detail: %', SQLSTATE, SQLERRM, detail;
END $$;

-- A missing model directory names the setting and how to install a model.
SET clip.model_dir = '/nonexistent/model';
\set VERBOSITY default
SELECT clip_embed_text('x');
RESET clip.model_dir;
SELECT vector_dims(clip_embed_text('x')) AS dims_after_reset;
