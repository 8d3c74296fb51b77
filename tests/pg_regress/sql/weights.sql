-- Shared weights (clip.shared_weights, on by default): each tower is prepared once into clip.weights_cache and
-- every backend maps its weights read-only from there, with embeddings identical to those of the in-heap mode.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set abs_builddir `printf %s "$PG_ABS_BUILDDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;
\set cache :abs_builddir '/weights-cache'
\setenv CACHE :cache
\! rm -rf "$CACHE"
\set image :images 'chelsea_rgb_451x300.jpg'

-- Two backends that both find the cache empty prepare at once: both succeed, one directory per tower remains,
-- and no temporary directory is left behind.
SELECT dblink_connect('first', format('host=%s port=%s dbname=%s user=postgres options=-cclip.weights_cache=%s',
    current_setting('unix_socket_directories'), current_setting('port'), current_database(), :'cache'));
SELECT dblink_connect('second', format('host=%s port=%s dbname=%s user=postgres options=-cclip.weights_cache=%s',
    current_setting('unix_socket_directories'), current_setting('port'), current_database(), :'cache'));
SELECT dblink_send_query(name, 'SELECT vector_dims(clip_embed_text(''racing'')) + vector_dims(clip_embed_image(pg_read_binary_file(' || quote_literal(:'image') || ')))')
FROM unnest(ARRAY['first', 'second']) AS name;
SELECT name, dims FROM unnest(ARRAY['first', 'second']) AS name, dblink_get_result(name) AS r(dims int);
SELECT dblink_disconnect('first'), dblink_disconnect('second');
SELECT regexp_replace(entry, '-[0-9a-f]{16}$', '-KEY') AS entry FROM pg_ls_dir(:'cache') AS entry
WHERE entry NOT LIKE '.%.lock' ORDER BY 1;

-- This backend uses what they prepared: its towers' weights are mapped from the cache.
SET clip.weights_cache = :'cache';
SELECT clip_info()->'weight_sharing'->>'mode' AS mode;
CREATE TEMP TABLE shared_embeddings AS
SELECT clip_embed_texts(ARRAY['a cat', 'two dogs in the snow']) AS texts,
       clip_embed_images(ARRAY[pg_read_binary_file(:'image'), pg_read_binary_file(:'images' || 'logo_rgba_240x240.png')]) AS images;
SELECT count(*) FILTER (WHERE line ~ '/text-[0-9a-f]{16}/text\.data$') AS text_weights_mapped,
       count(*) FILTER (WHERE line ~ '/image-[0-9a-f]{16}/image\.data$') AS image_weights_mapped
FROM regexp_split_to_table(pg_read_file('/proc/self/maps'), E'\n') AS line;
SELECT (clip_info()->'memory'->>'anonymous_bytes')::bigint < 256 * 1024 * 1024 AS own_memory_bounded;

-- The in-heap mode gives the same embeddings, bit for bit, and maps nothing from the cache.
SET clip.shared_weights = off;
SELECT clip_info()->'weight_sharing'->>'mode' AS mode,
       clip_embed_texts(ARRAY['a cat', 'two dogs in the snow']) = texts AS same_texts,
       clip_embed_images(ARRAY[pg_read_binary_file(:'image'), pg_read_binary_file(:'images' || 'logo_rgba_240x240.png')]) = images AS same_images
FROM shared_embeddings;
SELECT count(*) AS weights_mapped_in_heap_mode
FROM regexp_split_to_table(pg_read_file('/proc/self/maps'), E'\n') AS line WHERE line ~ '\.data$' AND line LIKE '%weights-cache%';
RESET clip.shared_weights;

-- A model whose towers keep their weights in data files beside their graphs (as towers over 2 GB are stored): the
-- tiny model's weights, so the same embeddings, shared and in heap.
\set external :abs_srcdir '/../fixtures/tiny-model-external'
SET clip.model_dir = :'external';
SELECT clip_info()->'files'->'text'->'data'->>'path' AS text_data, clip_info()->'files'->'image'->'data'->>'path' AS image_data;
SELECT clip_info()->'weight_sharing'->>'mode' AS mode,
       clip_embed_texts(ARRAY['a cat', 'two dogs in the snow']) = texts AS same_texts,
       clip_embed_images(ARRAY[pg_read_binary_file(:'image'), pg_read_binary_file(:'images' || 'logo_rgba_240x240.png')]) = images AS same_images
FROM shared_embeddings;
SET clip.shared_weights = off;
SELECT clip_info()->'weight_sharing'->>'mode' AS mode,
       clip_embed_texts(ARRAY['a cat', 'two dogs in the snow']) = texts AS same_texts,
       clip_embed_images(ARRAY[pg_read_binary_file(:'image'), pg_read_binary_file(:'images' || 'logo_rgba_240x240.png')]) = images AS same_images
FROM shared_embeddings;
RESET clip.shared_weights;
RESET clip.model_dir;

-- A cache directory the server cannot write is a clear error, with what to do.
SET clip.weights_cache = '/proc/clip_search_cache';
SELECT pg_temp.error_of($$SELECT clip_embed_text('x')$$);
RESET clip.weights_cache;
\! rm -rf "$CACHE"
