-- False alarms: an interrupt that stops nothing must not change a result. pg_log_backend_memory_contexts, which
-- sends one, is PostgreSQL 14's: on 13 the test runs nothing after its first query (false_alarms_1.out).
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;
SELECT current_setting('server_version_num')::int >= 140000 AS can_send_false_alarms \gset
SELECT :'can_send_false_alarms' AS can_send_false_alarms;
\if :can_send_false_alarms
-- An interrupt that only asks for something (pg_log_backend_memory_contexts asks for a log) is processed between
-- inferences, and the results are those of an undisturbed call: here 4096 texts in batches of 1024, while the
-- other session sends such a request every 50 ms.
SET clip.max_batch_size = 1024;
SET clip.batch_size = 1024;
\set many_texts 'SELECT md5(clip_embed_texts(array_agg(format(''a photo of thing number %s, seen from far away'', i)))::text) FROM generate_series(1, 4096) i'
SELECT dblink_connect('worker', format('host=%s port=%s dbname=%s user=postgres',
    current_setting('unix_socket_directories'), current_setting('port'), current_database()));
SELECT dblink_exec('worker', 'SET clip.max_batch_size = 1024');
SELECT dblink_exec('worker', 'SET clip.batch_size = 1024');
SELECT pid AS worker_pid FROM dblink('worker', 'SELECT pg_backend_pid()') AS r(pid int) \gset
SELECT dblink_send_query('worker', :'many_texts');
SELECT bool_and(logged) AS signalled FROM generate_series(1, 40) g,
    LATERAL (SELECT pg_log_backend_memory_contexts(:worker_pid) AS logged FROM pg_sleep(0.05) WHERE g > 0) s;
SELECT h AS disturbed FROM dblink_get_result('worker') AS r(h text) \gset
SELECT * FROM dblink_get_result('worker') AS r(h text);
:many_texts \gset undisturbed_
SELECT :'disturbed' = :'undisturbed_md5' AS same_after_false_alarms;
SELECT dblink_disconnect('worker');
RESET clip.batch_size;
RESET clip.max_batch_size;
\endif
