-- Cancellation: statement_timeout and pg_cancel_backend stop a long batch embedding promptly (interrupts are
-- checked between the inputs of an array and inside the tokenizing, PNG decoding and resizing of each, and an
-- inference is terminated between two operations), and the session stays usable. Embedding all 3000 images takes
-- far longer than the bounds below.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;
\set moon :images 'moon_l_512x512.png'
\set long_batch 'SELECT array_length(clip_embed_images(array_fill(pg_read_binary_file(' :'moon' '), ARRAY[3000])), 1)'

-- statement_timeout
SET clip.batch_size = 4;
SET statement_timeout = '300ms';
SELECT clock_timestamp() AS started \gset
:long_batch;
RESET statement_timeout;
SELECT clock_timestamp() - :'started'::timestamptz < interval '5 seconds' AS stopped_promptly;
SELECT vector_dims(clip_embed_text('the session is still usable')) AS dims;

-- Images decoded on several threads: the backend's thread, waiting for them, sees the timeout and stops them
-- within a row of their work. Decoding a 6000x6000 PNG takes about a second, so 64 of them on 2 threads would take
-- half a minute.
\set huge :hostile 'png_huge_legal_6000x6000.png'
SET clip.batch_size = 64;
SET clip.intra_op_threads = 2;
SET statement_timeout = '500ms';
SELECT clock_timestamp() AS started \gset
SELECT array_length(clip_embed_images(array_fill(pg_read_binary_file(:'huge'), ARRAY[64])), 1);
RESET statement_timeout;
SELECT clock_timestamp() - :'started'::timestamptz < interval '2 seconds' AS decoding_stopped_promptly;
RESET clip.intra_op_threads;
RESET clip.batch_size;

-- pg_cancel_backend from another session
SELECT dblink_connect('worker', format('host=%s port=%s dbname=%s user=postgres',
    current_setting('unix_socket_directories'), current_setting('port'), current_database()));
SELECT dblink_send_query('worker', :'long_batch');
SELECT pg_sleep(0.5);
SELECT clock_timestamp() AS cancelled_at \gset
SELECT count(pg_cancel_backend(pid)) AS cancelled FROM pg_stat_activity
WHERE query LIKE '%array_fill%' AND pid <> pg_backend_pid();
SELECT * FROM dblink_get_result('worker') AS r(n int);
SELECT * FROM dblink_get_result('worker') AS r(n int);  -- the end of the cancelled query's results
SELECT clock_timestamp() - :'cancelled_at'::timestamptz < interval '5 seconds' AS stopped_promptly;
SELECT * FROM dblink('worker', 'SELECT vector_dims(clip_embed_text(''still usable''))') AS r(dims int);
SELECT dblink_disconnect('worker');

-- pg_terminate_backend while images are decoded on 2 threads: the backend pauses its decoding threads before it
-- runs the check that exits, and exits alone (a crash would restart the server, ending this session too).
SELECT pg_postmaster_start_time() AS postmaster_started \gset
SELECT dblink_connect('decoder', format('host=%s port=%s dbname=%s user=postgres',
    current_setting('unix_socket_directories'), current_setting('port'), current_database()));
SELECT dblink_send_query('decoder', format('SET clip.intra_op_threads = 2; SET clip.batch_size = 64; '
    'SELECT array_length(clip_embed_images(array_fill(pg_read_binary_file(%L), ARRAY[64])), 1)', :'huge'));
SELECT pg_sleep(0.5);
SELECT count(pg_terminate_backend(pid)) AS terminated FROM pg_stat_activity
WHERE query LIKE '%ARRAY[64]%' AND pid <> pg_backend_pid();
SELECT pg_sleep(1);
SELECT pg_postmaster_start_time() = :'postmaster_started'::timestamptz AS server_not_restarted,
       count(*) = 0 AS decoder_gone
FROM pg_stat_activity WHERE query LIKE '%ARRAY[64]%' AND pid <> pg_backend_pid();
SELECT dblink_disconnect('decoder');

-- Texts, whatever the batch size: each text here is one word of 1 MiB, the most the tokenizer reads, whose BPE
-- takes about a quarter of a second, so tokenizing a batch of 64 takes about 16 s. The 5-second bounds hold only
-- if the check runs inside a batch (here the cancel takes effect within milliseconds of the timeout).
SELECT clip_embed_text('a photo of a cat') AS cat_before \gset
CREATE TEMP TABLE long_word AS SELECT repeat('abcdefghij', 104858) AS word;
SET statement_timeout = '1s';
SET clip.batch_size = 64;
SELECT clock_timestamp() AS started \gset
SELECT array_length(clip_embed_texts(array_fill(word, ARRAY[128])), 1) FROM long_word;
SELECT clock_timestamp() - :'started'::timestamptz < interval '5 seconds' AS texts_stopped_promptly;
SELECT clock_timestamp() AS started \gset
SELECT count(*) FROM long_word, clip_classify(pg_read_binary_file(:'moon'), array_fill(word, ARRAY[64]));
SELECT clock_timestamp() - :'started'::timestamptz < interval '5 seconds' AS labels_stopped_promptly;
RESET clip.batch_size;
SELECT clock_timestamp() AS started \gset
SELECT array_length(clip_embed_texts(array_fill(word, ARRAY[128])), 1) FROM long_word;
SELECT clock_timestamp() - :'started'::timestamptz < interval '5 seconds' AS texts_stopped_promptly;
SELECT clock_timestamp() AS started \gset
SELECT count(*) FROM long_word, clip_classify(pg_read_binary_file(:'moon'), array_fill(word, ARRAY[64]));
SELECT clock_timestamp() - :'started'::timestamptz < interval '5 seconds' AS labels_stopped_promptly;
RESET statement_timeout;
-- The backend's model was stopped in the middle of its work: it gives the same embeddings as before.
SELECT clip_embed_text('a photo of a cat') = :'cat_before'::vector AS same_embedding_after_cancels;
