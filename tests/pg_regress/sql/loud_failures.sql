-- Mistakes a new user makes end in the extension's own error or warning, naming the cause and the fix.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup

CREATE TABLE loud_notes (id int PRIMARY KEY, body text, embedding vector(32));
INSERT INTO loud_notes (id, body) VALUES (1, 'a note'), (2, 'another note');

-- clip_backfill commits after each batch: inside a transaction block it refuses before it starts.
BEGIN;
CALL clip_backfill('loud_notes', 'body', 'embedding');
ROLLBACK;
-- Several statements in one query string are one implicit transaction block too.
CALL clip_backfill('loud_notes', 'body', 'embedding') \; SELECT 1;
-- So is a PL/pgSQL block with an EXCEPTION clause, a subtransaction, where a COMMIT fails too.
DO $$ BEGIN CALL clip_backfill('loud_notes', 'body', 'embedding'); EXCEPTION WHEN division_by_zero THEN NULL; END $$;
SELECT count(embedding) AS embedded_after_refusals FROM loud_notes;

-- A column of another dimension than the model's is refused up front, by clip_backfill and clip_watch.
CREATE TABLE loud_wide (id int PRIMARY KEY, body text, embedding vector(768));
INSERT INTO loud_wide VALUES (1, 'a note', NULL);
CALL clip_backfill('loud_wide', 'body', 'embedding');
SELECT clip_watch('loud_wide', 'body', 'embedding');
-- A column without a dimension, or of the model's, is accepted.
ALTER TABLE loud_wide ALTER COLUMN embedding TYPE vector;
SET client_min_messages = warning;
CALL clip_backfill('loud_wide', 'body', 'embedding');
RESET client_min_messages;
SELECT vector_dims(embedding) AS dims FROM loud_wide;

-- clip_watch on a server that runs no background worker for this database: a WARNING says how to start one.
SELECT clip_watch('loud_notes', 'body', 'embedding');
SELECT worker_state FROM clip_watch_status WHERE relation = 'loud_notes'::regclass;
SELECT clip_unwatch('loud_notes');

DROP TABLE loud_notes, loud_wide;
