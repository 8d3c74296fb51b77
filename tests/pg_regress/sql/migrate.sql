-- clip_migrate's SQL surface, with the watches' batches run here as the worker runs them (the worker itself, with
-- concurrent writes and a crash: tests/migrate.sh): the new column, its index and watch, rows written meanwhile,
-- the progress view, the refusals, the switch, clip_column_model and the cancel.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set tiny :abs_srcdir '/../fixtures/tiny-model'
\set siglip2 :abs_srcdir '/../fixtures/families/siglip2'
SELECT clip_register_model('tiny', :'tiny');
SELECT clip_register_model('siglip2', :'siglip2');
-- One batch of every watch, as the background worker runs them; the rows it embedded.
CREATE FUNCTION pg_temp.run_watches() RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(sum(b.done), 0)::bigint FROM clip_search_internal.watches w
    CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 100) b
$$;
-- The table's columns, indexes and triggers, to compare.
CREATE FUNCTION pg_temp.shape(relation regclass) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(E'\n',
        (SELECT string_agg(format('%s %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum)
         FROM pg_attribute WHERE attrelid = relation AND attnum > 0 AND NOT attisdropped),
        (SELECT string_agg(pg_get_indexdef(indexrelid), E'\n' ORDER BY indexrelid::regclass::text)
         FROM pg_index WHERE indrelid = relation),
        (SELECT string_agg(tgname, ', ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = relation))
$$;
SET client_min_messages = error;  -- the watches' warning that no worker runs here

CREATE TABLE notes (id int PRIMARY KEY, body text, embedding vector(32));
INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 6) i;
CREATE INDEX notes_embedding_hnsw ON notes USING hnsw (embedding vector_cosine_ops) WITH (m = 8);
SELECT clip_watch('notes', 'body', 'embedding', model => 'tiny');
SELECT pg_temp.run_watches() AS embedded_with_tiny;

-- The new column has the model's dimension, the target column's HNSW index with its operator class and options,
-- and a watch of its own.
SELECT clip_migrate('notes', 'body', 'embedding', 'siglip2');
SELECT pg_temp.shape('notes');
SELECT relation, source_column, target_column, new_column, model, rows_pending, rows_embedded, ready_to_switch
FROM clip_migrations;
SELECT target_column, model, rows_pending FROM clip_watch_status ORDER BY target_column;
SELECT clip_column_model('notes', 'embedding') AS queried, clip_column_model('notes', 'embedding_next') AS next;

-- Refusals.
SELECT pg_temp.error_of($$SELECT clip_migrate('notes', 'body', 'embedding', 'siglip2')$$);
CREATE TABLE other_notes (id int PRIMARY KEY, body text, embedding vector(32));
SELECT pg_temp.error_of($$SELECT clip_migrate('other_notes', 'body', 'embedding', 'nonesuch')$$);
SELECT pg_temp.error_of($$SELECT clip_migrate('other_notes', 'body', 'embedding', NULL)$$);
SELECT pg_temp.error_of($$SELECT clip_migrate('other_notes', 'body', 'body', 'siglip2')$$);
SELECT pg_temp.error_of($$SELECT clip_migrate('other_notes', 'nothing', 'embedding', 'siglip2')$$);
ALTER TABLE other_notes ADD COLUMN embedding_next vector(48);
SELECT pg_temp.error_of($$SELECT clip_migrate('other_notes', 'body', 'embedding', 'siglip2')$$);
SELECT pg_temp.shape('other_notes');
SELECT pg_temp.error_of($$SELECT clip_migrate_switch('other_notes')$$);
SELECT pg_temp.error_of($$SELECT clip_migrate_cancel('other_notes')$$);
DROP TABLE other_notes;
-- Only the table's owner.
CREATE ROLE clip_migrate_stranger;
GRANT SELECT ON notes TO clip_migrate_stranger;
SET ROLE clip_migrate_stranger;
SELECT pg_temp.error_of($$SELECT clip_migrate_switch('notes')$$);
SELECT pg_temp.error_of($$SELECT clip_migrate_cancel('notes')$$);
SELECT pg_temp.error_of($$DELETE FROM clip_search_internal.migrations$$);
SELECT relation, model FROM clip_migrations;
RESET ROLE;
-- No switch while more rows are due than clip.batch_size.
SET clip.batch_size = 2;
SELECT pg_temp.error_of($$SELECT clip_migrate_switch('notes')$$);
RESET clip.batch_size;
-- clip_unwatch leaves the migration's watch.
SELECT clip_unwatch('notes');
SELECT target_column, model FROM clip_watch_status;
SELECT clip_watch('notes', 'body', 'embedding', model => 'tiny');

-- Rows inserted and updated meanwhile end with both embeddings right.
INSERT INTO notes VALUES (7, 'note seven');
UPDATE notes SET body = 'note one, changed' WHERE id = 1;
SELECT pg_temp.run_watches() AS embedded;
SELECT pg_temp.run_watches() AS embedded;
SELECT count(*) AS rows, bool_and(embedding = clip_embed_text(body, model => 'tiny')) AS old_right,
       bool_and(embedding_next = clip_embed_text(body, model => 'siglip2')) AS new_right
FROM notes;
SELECT rows_pending, rows_embedded, ready_to_switch FROM clip_migrations;

-- A clip_embed_trigger trigger that fills the target column would fill it with the old model after the switch.
CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE ON notes FOR EACH ROW
    EXECUTE FUNCTION clip_embed_trigger('body', 'embedding', 'tiny');
SELECT pg_temp.error_of($$SELECT clip_migrate_switch('notes')$$);
DROP TRIGGER notes_embed ON notes;

-- The switch embeds the rows due under its lock, ends the old column's watch, and renames the columns.
INSERT INTO notes VALUES (8, 'note eight');
SELECT clip_migrate_switch('notes');
SELECT pg_temp.shape('notes');
SELECT count(*) FROM clip_migrations;
SELECT target_column, model, rows_pending FROM clip_watch_status;
SELECT count(*) AS rows, bool_and(embedding = clip_embed_text(body, model => 'siglip2')) AS new_right,
       bool_and(embedding_old = clip_embed_text(body, model => 'tiny')) AS old_kept
FROM notes;
SELECT clip_column_model('notes', 'embedding');
-- A query that names its model through the column compares like with like, and is served by the index.
SET enable_seqscan = off;
SELECT id FROM notes ORDER BY embedding <=> clip_embed_text('note 3', clip_column_model('notes', 'embedding'))
LIMIT 1;
EXPLAIN (COSTS OFF)
SELECT id FROM notes ORDER BY embedding <=> clip_embed_text('note 3', clip_column_model('notes', 'embedding'))
LIMIT 1;
RESET enable_seqscan;
-- The new column's watch goes on.
UPDATE notes SET body = 'note two, changed' WHERE id = 2;
SELECT pg_temp.run_watches() AS embedded;
SELECT embedding = clip_embed_text(body, model => 'siglip2') AS right_after_switch FROM notes WHERE id = 2;

-- A cancel leaves the table as it was.
ALTER TABLE notes DROP COLUMN embedding_old;
CREATE TEMP TABLE before AS SELECT pg_temp.shape('notes') AS shape;
SELECT clip_migrate('notes', 'body', 'embedding', 'tiny');
SELECT pg_temp.run_watches() AS embedded;
SELECT clip_migrate_cancel('notes');
SELECT shape = pg_temp.shape('notes') AS as_before FROM before;
SELECT count(*) FROM clip_migrations;
SELECT target_column, model FROM clip_watch_status;

-- A switch that drops the old column; one that would overwrite a column named <target>_old is refused.
SELECT clip_migrate('notes', 'body', 'embedding', 'tiny');
SELECT pg_temp.run_watches() AS embedded;
ALTER TABLE notes ADD COLUMN embedding_old int;
SELECT pg_temp.error_of($$SELECT clip_migrate_switch('notes')$$);
SELECT clip_migrate_switch('notes', drop_old => true);
SELECT pg_temp.shape('notes');
SELECT bool_and(embedding = clip_embed_text(body, model => 'tiny')) AS right FROM notes;
-- A model that a migration moves to counts as used.
SELECT clip_migrate('notes', 'body', 'embedding', 'siglip2');
SELECT pg_temp.error_of($$SELECT clip_unregister_model('siglip2')$$);
SELECT clip_migrate_cancel('notes');

SELECT clip_unwatch('notes');
DROP TABLE notes;

-- A partition whose attribute numbers differ from its parent's (a column dropped before it was attached): an update
-- of the source clears the migration's new column of the partition's row, and nothing else.
CREATE TABLE parted (id int, body text, embedding vector(32)) PARTITION BY RANGE (id);
CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_high (id int, junk int, body text, embedding vector(32));
ALTER TABLE parted_high DROP COLUMN junk;
ALTER TABLE parted ATTACH PARTITION parted_high FOR VALUES FROM (100) TO (200);
INSERT INTO parted VALUES (1, 'low', NULL), (101, 'high', NULL);
UPDATE parted SET embedding = clip_embed_text(body, model => 'tiny');
SELECT clip_migrate('parted', 'body', 'embedding', 'siglip2');
SELECT pg_temp.run_watches() AS embedded;
UPDATE parted SET body = body || ', changed';
SELECT id, embedding IS NOT NULL AS old_kept, embedding_next IS NULL AS new_cleared FROM parted ORDER BY id;
SELECT pg_temp.run_watches() AS embedded;
SELECT clip_migrate_switch('parted');
SELECT bool_and(embedding = clip_embed_text(body, model => 'siglip2')) AS right FROM parted;
SELECT clip_unwatch('parted');
DROP TABLE parted;

-- A target column NOT NULL: kept as <target>_old, which nothing fills any more, it accepts rows without a value.
CREATE TABLE strict_notes (id int PRIMARY KEY, body text, embedding vector(32) NOT NULL);
INSERT INTO strict_notes VALUES (1, 'one', clip_embed_text('one', model => 'tiny'));
SELECT clip_migrate('strict_notes', 'body', 'embedding', 'siglip2');
SELECT pg_temp.run_watches() AS embedded;
SELECT clip_migrate_switch('strict_notes');
INSERT INTO strict_notes (id, body) VALUES (2, 'two');
SELECT pg_temp.run_watches() AS embedded;
SELECT bool_and(embedding = clip_embed_text(body, model => 'siglip2')) AS right FROM strict_notes;
SELECT clip_unwatch('strict_notes');
DROP TABLE strict_notes;

-- Names: a table whose name fills 63 bytes, a column too long to name the new one after.
CREATE TABLE a_table_whose_name_is_long_enough_to_fill_sixty_three_bytes_xx (id int PRIMARY KEY, body text,
    embedding vector(32), a_column_whose_name_is_too_long_to_take_the_suffix_of_a_migrat vector(32));
SELECT clip_watch('a_table_whose_name_is_long_enough_to_fill_sixty_three_bytes_xx', 'body', 'embedding');
SELECT clip_migrate('a_table_whose_name_is_long_enough_to_fill_sixty_three_bytes_xx', 'body', 'embedding', 'tiny');
SELECT indexrelid::regclass AS pending_index FROM pg_index
WHERE indrelid = 'a_table_whose_name_is_long_enough_to_fill_sixty_three_bytes_xx'::regclass ORDER BY 1;
SELECT clip_migrate_cancel('a_table_whose_name_is_long_enough_to_fill_sixty_three_bytes_xx');
SELECT pg_temp.error_of($$SELECT clip_migrate('a_table_whose_name_is_long_enough_to_fill_sixty_three_bytes_xx', 'body',
    'a_column_whose_name_is_too_long_to_take_the_suffix_of_a_migrat', 'tiny')$$);
SELECT clip_unwatch('a_table_whose_name_is_long_enough_to_fill_sixty_three_bytes_xx');
DROP TABLE a_table_whose_name_is_long_enough_to_fill_sixty_three_bytes_xx;

-- Refused switches: a view that reads the column (it would go on reading the old one), and a trigger that fills a
-- column whose name is not ASCII.
CREATE TABLE viewed (id int PRIMARY KEY, body text, "émb" vector(32));
INSERT INTO viewed VALUES (1, 'one', NULL);
SELECT clip_watch('viewed', 'body', 'émb', model => 'siglip2');
SELECT clip_migrate('viewed', 'body', 'émb', 'tiny');
SELECT pg_temp.run_watches() AS embedded;
CREATE VIEW viewed_search AS SELECT id, "émb" FROM viewed;
SELECT pg_temp.error_of($$SELECT clip_migrate_switch('viewed')$$);
DROP VIEW viewed_search;
CREATE TRIGGER viewed_embed BEFORE INSERT OR UPDATE ON viewed FOR EACH ROW
    EXECUTE FUNCTION clip_embed_trigger('body', 'émb', 'siglip2');
SELECT pg_temp.error_of($$SELECT clip_migrate_switch('viewed')$$);
DROP TRIGGER viewed_embed ON viewed;
-- A batch of a watch that ended since the worker listed it (the switch ends the old column's) does nothing.
CREATE TEMP TABLE listed AS SELECT * FROM clip_search_internal.watches w
WHERE relation = 'viewed'::regclass AND NOT clip_search_internal.is_migration_watch(w);
SELECT clip_migrate_switch('viewed');
INSERT INTO viewed VALUES (2, 'two', NULL);
SELECT b.* FROM listed w
CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 100) b;
SELECT id, "émb" IS NULL AS due, "émb_old" IS NULL AS old_due FROM viewed ORDER BY id;
SELECT pg_temp.run_watches() AS embedded;
SELECT bool_and("émb" = clip_embed_text(body, model => 'tiny')) AS right FROM viewed;
-- A migration whose new column was dropped shows, with no progress, and can be cancelled.
SELECT clip_migrate('viewed', 'body', 'émb', 'siglip2');
ALTER TABLE viewed DROP COLUMN "émb_next";
SELECT relation, target_column, new_column, rows_pending FROM clip_migrations;
SELECT pg_temp.error_of($$SELECT clip_migrate_switch('viewed')$$);
SELECT clip_migrate_cancel('viewed');
SELECT clip_unwatch('viewed');
DROP TABLE viewed;

-- Watches and migrations name plain or partitioned tables only: a view's row, whose reading would run its owner's
-- functions as the role that reads the status, is refused. A role with a column's privilege sees its model.
CREATE TABLE granted (id int PRIMARY KEY, body text, embedding vector(32));
SELECT clip_watch('granted', 'body', 'embedding', model => 'siglip2');
GRANT SELECT (id, embedding) ON granted TO clip_migrate_stranger;
GRANT CREATE ON SCHEMA public TO clip_migrate_stranger;
SET ROLE clip_migrate_stranger;
SELECT clip_column_model('granted', 'embedding');
CREATE VIEW stranger_view AS SELECT 1 AS id, 'x'::text AS body, NULL::vector(32) AS embedding;
SELECT pg_temp.error_of($$INSERT INTO clip_search_internal.watches (relation, source_attnum, target_attnum, pending_index)
                          VALUES ('stranger_view', 2, 3, 'stranger_view')$$);
SELECT pg_temp.error_of($$INSERT INTO clip_search_internal.migrations (relation, source_attnum, target_attnum, new_attnum,
                          model) VALUES ('stranger_view', 2, 3, 3, 'tiny')$$);
DROP VIEW stranger_view;
RESET ROLE;
SELECT clip_unwatch('granted');
DROP TABLE granted;
REVOKE ALL ON SCHEMA public FROM clip_migrate_stranger;
DROP ROLE clip_migrate_stranger;
SELECT clip_unregister_model('siglip2');
SELECT clip_unregister_model('tiny');
