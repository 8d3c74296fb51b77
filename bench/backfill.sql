-- Backfill throughput and batch speed-up on the demo cluster's model (run after scripts/demo.sh):
--   scripts/cluster.sh psql demo -v photos="$PWD/.deps/photos/" -f bench/backfill.sql
-- Texts: 2000 captions; images: the 16 demo photos, 8 copies each. Times are taken in the backend.
\pset footer off
SET client_min_messages = warning;
DROP DATABASE IF EXISTS clip_backfill_bench;
CREATE DATABASE clip_backfill_bench;
\c clip_backfill_bench
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
SELECT (clip_info()->>'embed_dim')::int AS dim \gset
CREATE TABLE captions (id int PRIMARY KEY, caption text NOT NULL, embedding vector(:dim));
INSERT INTO captions SELECT i, 'a photo of item number ' || i || ' on a wooden table' FROM generate_series(1, 2000) i;
CREATE TABLE photos (id int PRIMARY KEY, image bytea NOT NULL, embedding vector(:dim));
INSERT INTO photos SELECT row_number() OVER (), pg_read_binary_file(:'photos' || name)
FROM pg_ls_dir(:'photos') AS name, generate_series(1, 8);
SELECT vector_dims(clip_embed_text('warm up')), vector_dims(clip_embed_image(image)) FROM photos LIMIT 1;

CREATE TEMP TABLE timings (what text, rows int, seconds float8);
CREATE FUNCTION pg_temp.timed(what text, rows int, statement text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE started timestamptz := clock_timestamp();
BEGIN
  EXECUTE statement;
  INSERT INTO timings VALUES (what, rows, extract(epoch FROM clock_timestamp() - started));
END $$;
\o /dev/null
SELECT pg_temp.timed('texts, one call per row', 500, 'SELECT count(clip_embed_text(caption)) FROM captions WHERE id <= 500');
SELECT pg_temp.timed('texts, clip_embed_texts (batches of 16)', 500, 'SELECT array_length(clip_embed_texts(array_agg(caption)), 1) FROM captions WHERE id <= 500');
SELECT pg_temp.timed('images, one call per row', 128, 'SELECT count(clip_embed_image(image)) FROM photos');
SELECT pg_temp.timed('images, clip_embed_images (batches of 16)', 128, 'SELECT array_length(clip_embed_images(array_agg(image)), 1) FROM photos');
\o
SELECT what, rows, round((rows / seconds)::numeric, 1) AS rows_per_s FROM timings;

SELECT clock_timestamp() AS started \gset
CALL clip_backfill('captions', 'caption', 'embedding', 64);
SELECT 'clip_backfill, texts' AS what, count(embedding) AS rows,
       round((count(embedding) / extract(epoch FROM clock_timestamp() - :'started'::timestamptz))::numeric, 1) AS rows_per_s
FROM captions;
SELECT clock_timestamp() AS started \gset
CALL clip_backfill('photos', 'image', 'embedding', 16);
SELECT 'clip_backfill, images' AS what, count(embedding) AS rows,
       round((count(embedding) / extract(epoch FROM clock_timestamp() - :'started'::timestamptz))::numeric, 1) AS rows_per_s
FROM photos;
\c postgres
DROP DATABASE clip_backfill_bench;
