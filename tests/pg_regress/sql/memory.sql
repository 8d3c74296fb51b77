-- Memory an ordinary role controls: the array functions decode, preprocess and free each image at once, on
-- clip.intra_op_threads threads, so a backend holds one decoded image per thread however many large images a call
-- embeds, and an ordinary role may ask for no larger batch than clip.max_batch_size and no more threads than
-- clip.max_intra_op_threads. Here: 24 legal 6000x6000 PNGs (108 MB of pixels each, 2.6 GB together) in one call,
-- in a fresh backend (its peak RSS counts only this statement), in one batch of the largest size the role may
-- set, decoded on the most threads it may set.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set huge :hostile 'png_huge_legal_6000x6000.png'
\set huge_rgba16 :hostile 'png_huge_legal_rgba16_7071x7071.png'
CREATE TABLE huge_image AS SELECT pg_read_binary_file(:'huge') AS image;
CREATE TABLE huge_rgba16_image AS SELECT pg_read_binary_file(:'huge_rgba16') AS image;
-- Not a superuser; pg_read_file only lets it read its own peak memory below.
CREATE ROLE clip_memory_user LOGIN IN ROLE pg_read_server_files;
GRANT EXECUTE ON FUNCTION pg_read_file(text) TO clip_memory_user;
GRANT SELECT ON huge_image, huge_rgba16_image TO clip_memory_user;
\c - clip_memory_user
SET clip.batch_size = 64;
SET clip.intra_op_threads = 4;
SELECT rolsuper FROM pg_roles WHERE rolname = current_user;
SELECT count(e) AS embedded, bool_and(vector_dims(e) = 32) AS all_32_dims
FROM unnest((SELECT clip_embed_images(array_fill(image, ARRAY[24])) FROM huge_image)) AS e;
-- VmHWM, the peak resident set of this backend since it started.
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+) kB'))[1]::bigint < 1024 * 1024
       AS peak_rss_under_1_gb;
-- A 7071x7071 RGBA PNG at 16 bits per sample (390 KB of file, 400 MB of 16-bit pixels), in a fresh backend: it
-- is decoded to 8 bits row by row (200 MB) and resized without a premultiplied copy, so the backend peaks near
-- 200 MB above its start (60 MB with the tiny model). Whole at 16 bits on its way, it would peak near 600 MB.
\c - clip_memory_user
SELECT vector_dims(clip_embed_image(image)) AS dims FROM huge_rgba16_image;
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+) kB'))[1]::bigint < 400 * 1024
       AS peak_rss_under_400_mb;
\c - postgres
DROP TABLE huge_image, huge_rgba16_image;
REVOKE EXECUTE ON FUNCTION pg_read_file(text) FROM clip_memory_user;
DROP ROLE clip_memory_user;
