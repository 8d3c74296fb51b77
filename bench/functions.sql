-- Helpers of scripts/bench.sh, in schema "bench" of its own database. Every time is taken inside the backend
-- (clock_timestamp() around the call), so no client or socket time is counted; every function returns JSON.
CREATE SCHEMA IF NOT EXISTS bench;

-- This backend's memory from /proc/<pid>/status, in MB: VmRSS (resident), RssAnon (private, not file-backed),
-- VmHWM (peak resident). The backend reads its own status file: no other privilege is involved.
CREATE OR REPLACE FUNCTION bench.rss() RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_object_agg(m[1], round(m[2]::numeric / 1024, 1))
  FROM regexp_split_to_table(pg_read_file('/proc/' || pg_backend_pid() || '/status'), E'\n') AS line,
       regexp_match(line, '^(VmRSS|RssAnon|VmHWM):\s+(\d+) kB') AS m
  WHERE m IS NOT NULL
$$;

-- Milliseconds of each clip_embed_text call, over `rounds` passes of `texts`.
CREATE OR REPLACE FUNCTION bench.time_texts(texts text[], rounds int) RETURNS float8[] LANGUAGE plpgsql AS $$
DECLARE
  t text;
  t0 timestamptz;
  v vector;
  ms float8[] := '{}';
BEGIN
  FOR r IN 1..rounds LOOP
    FOREACH t IN ARRAY texts LOOP
      t0 := clock_timestamp();
      v := clip_embed_text(t);
      ms := ms || extract(epoch FROM clock_timestamp() - t0)::float8 * 1000;
    END LOOP;
  END LOOP;
  RETURN ms;
END $$;

-- Milliseconds of one clip_embed_image call on the named photo (the first one in a fresh backend loads the tower).
CREATE OR REPLACE FUNCTION bench.time_image(photo text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
  t0 timestamptz := clock_timestamp();
  v vector;
BEGIN
  v := clip_embed_image((SELECT image FROM bench.photos WHERE name = photo LIMIT 1));
  RETURN extract(epoch FROM clock_timestamp() - t0)::float8 * 1000;
END $$;

-- Images per second: clip_embed_image on every row of bench.photos (one inference per row), and
-- clip_embed_images on all of them in one array (inferences of clip.batch_size images).
CREATE OR REPLACE FUNCTION bench.image_throughput() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  n bigint := (SELECT count(*) FROM bench.photos);
  t0 timestamptz;
  rows_s float8;
  batch_s float8;
BEGIN
  t0 := clock_timestamp();
  PERFORM count(clip_embed_image(image)) FROM bench.photos;
  rows_s := extract(epoch FROM clock_timestamp() - t0);
  t0 := clock_timestamp();
  PERFORM cardinality(clip_embed_images(array_agg(image ORDER BY id))) FROM bench.photos;
  batch_s := extract(epoch FROM clock_timestamp() - t0);
  RETURN jsonb_build_object('images', n, 'image_rows_per_s', n / rows_s, 'image_batch_per_s', n / batch_s);
END $$;

-- Milliseconds of each clip_embed_image call on the first copy of every photo (one inference per call), over
-- `rounds` passes.
CREATE OR REPLACE FUNCTION bench.time_images(rounds int) RETURNS float8[] LANGUAGE plpgsql AS $$
DECLARE
  img bytea;
  t0 timestamptz;
  v vector;
  ms float8[] := '{}';
BEGIN
  FOR r IN 1..rounds LOOP
    FOR img IN SELECT image FROM bench.photos WHERE copy = 1 ORDER BY name LOOP
      t0 := clock_timestamp();
      v := clip_embed_image(img);
      ms := ms || extract(epoch FROM clock_timestamp() - t0)::float8 * 1000;
    END LOOP;
  END LOOP;
  RETURN ms;
END $$;

-- The weights part's workload: every short text, then the first copy of every photo in one clip_embed_images
-- call (inferences of clip.batch_size images), so that the backend holds both towers.
CREATE OR REPLACE FUNCTION bench.embed_texts_and_images() RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN jsonb_build_object(
    'texts', (SELECT count(clip_embed_text(t)) FROM bench.texts WHERE kind = 'short'),
    'images', (SELECT cardinality(clip_embed_images(array_agg(image ORDER BY name))) FROM bench.photos WHERE copy = 1));
END $$;

-- The same with each of the registered models named in models, one after the other.
CREATE OR REPLACE FUNCTION bench.embed_texts_and_images_by(models name[]) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN (SELECT jsonb_object_agg(m, jsonb_build_object(
    'texts', (SELECT count(clip_embed_text(t, model => m)) FROM bench.texts WHERE kind = 'short'),
    'images', (SELECT cardinality(clip_embed_images(array_agg(image ORDER BY name), model => m))
               FROM bench.photos WHERE copy = 1)))
          FROM unnest(models) m);
END $$;
