-- Inference threads: the embeddings do not depend on clip.intra_op_threads (which also decodes an array's images
-- on that many threads), and the threads ONNX Runtime starts have every signal PostgreSQL handles blocked (SigBlk
-- in /proc/self/task/*/status), so that its handlers run on the backend's own thread only.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set image :images 'chelsea_rgb_451x300.jpg'
CREATE TEMP TABLE images AS
SELECT ARRAY[pg_read_binary_file(:'image'), NULL, pg_read_binary_file(:'images' || 'logo_rgba_240x240.png'),
             pg_read_binary_file(:'images' || 'camera_l_128x128.gif'),
             pg_read_binary_file(:'images' || 'rocket_rgb_1280x854.jpg')] AS images;
CREATE TEMP TABLE one_thread AS
SELECT clip_embed_text('a cat on a sofa') AS text_embedding,
       clip_embed_image(pg_read_binary_file(:'image')) AS image_embedding,
       clip_embed_images(images) AS array_embeddings
FROM images;
SET clip.intra_op_threads = 2;
SELECT clip_info()->>'intra_op_threads' AS threads,
       (clip_embed_text('a cat on a sofa') <=> text_embedding) < 1e-6 AS same_text_embedding,
       (clip_embed_image(pg_read_binary_file(:'image')) <=> image_embedding) < 1e-6 AS same_image_embedding,
       (SELECT bool_and(a IS NULL AND b IS NULL OR (a <=> b) < 1e-6) AND count(*) = 5
        FROM unnest(clip_embed_images(images), array_embeddings) AS u(a, b)) AS same_array_embeddings
FROM one_thread, images;
-- SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM and SIGCHLD: bits 0, 1, 2, 9, 11, 13, 14, 16.
SELECT count(*) > 0 AS onnx_runtime_threads_exist,
       bool_and(('x' || lpad(sigblk, 16, '0'))::bit(64)::bigint & x'16a07'::int = x'16a07'::int) AS all_block_signals
FROM (SELECT (regexp_match(pg_read_file('/proc/self/task/' || tid || '/status'), 'SigBlk:\s+([0-9a-f]+)'))[1] AS sigblk
      FROM pg_ls_dir('/proc/self/task') AS tid WHERE tid::int <> pg_backend_pid()) AS threads;
-- The backend's own thread blocks none of them once the work is done.
SELECT ('x' || lpad(sigblk, 16, '0'))::bit(64)::bigint & x'16a07'::int AS main_thread_blocked
FROM (SELECT (regexp_match(pg_read_file('/proc/self/status'), 'SigBlk:\s+([0-9a-f]+)'))[1] AS sigblk) AS main;
RESET clip.intra_op_threads;
