-- Cancellation: statement_timeout and pg_cancel_backend stop a long batch embedding promptly (interrupts are
-- checked between inference batches), and the session stays usable. Embedding all 3000 images takes far
-- longer than the bounds below.
\getenv abs_srcdir PG_ABS_SRCDIR
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
