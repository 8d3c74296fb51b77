-- Two clip_backfill calls at once share the work: each takes only rows the other has not locked (SKIP LOCKED),
-- and no row is embedded twice. The other session is held inside its first batch, with that batch's rows locked,
-- until this session's call has finished, so the outcome does not depend on timing.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;

CREATE TABLE shared_work (id int PRIMARY KEY, body text, embedding vector(32),
                          embed_writes int NOT NULL DEFAULT 0, embedded_by text);
-- Counts each row's embedding writes and notes who wrote; the session named other_session waits at its first
-- write until this session releases the advisory lock.
CREATE FUNCTION shared_work_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.embedding IS DISTINCT FROM OLD.embedding THEN
    NEW.embed_writes := OLD.embed_writes + 1;
    NEW.embedded_by := current_setting('application_name');
    IF NEW.embedded_by = 'other_session' THEN
      PERFORM pg_advisory_xact_lock_shared(90909);
    END IF;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER shared_work_count BEFORE UPDATE ON shared_work FOR EACH ROW EXECUTE FUNCTION shared_work_count();
INSERT INTO shared_work (id, body) SELECT i, 'shared row ' || i FROM generate_series(1, 40) i;

SELECT pg_advisory_lock(90909);
SELECT dblink_connect('other', format('host=%s port=%s dbname=%s user=postgres application_name=other_session',
    current_setting('unix_socket_directories'), current_setting('port'), current_database()));
SELECT dblink_send_query('other', $$CALL clip_backfill('shared_work', 'body', 'embedding', 10)$$);
-- Wait until the other session has locked its first batch and waits on the advisory lock. (The timeout turns a
-- hang into a failure: a call that waited for the other's rows instead of skipping them would never return.)
SET statement_timeout = '60s';
DO $$
BEGIN
  WHILE NOT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = 90909 AND NOT granted) LOOP
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
-- This call skips the other session's locked batch and embeds the rest.
SET application_name = 'this_session';
\set VERBOSITY terse
CALL clip_backfill('shared_work', 'body', 'embedding', 10);
\set VERBOSITY default
RESET application_name;
RESET statement_timeout;
SELECT pg_advisory_unlock(90909);
-- The other call finishes its batch and finds nothing left.
SELECT * FROM dblink_get_result('other') AS r(status text);
SELECT dblink_disconnect('other');
SELECT embedded_by, count(*) AS rows, max(embed_writes) AS most_writes_per_row,
       bool_and(embedding = clip_embed_text(body)) AS correct
FROM shared_work GROUP BY embedded_by ORDER BY embedded_by;

DROP TABLE shared_work;
DROP FUNCTION shared_work_count();
