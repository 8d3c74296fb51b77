-- Workflows: batch functions, auto-embedding by trigger and generated column, resumable backfill,
-- zero-shot classification, blended queries. Scores come from the tiny random-weight test model.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set moon :images 'moon_l_512x512.png'
\set cat :images 'chelsea_rgb_451x300.jpg'
\set pixel :images 'tiny_rgb_1x1.png'

-- Batch functions: input order, NULL elements, the same vectors as single calls.
SELECT array_length(e, 1) AS n, e[2] IS NULL AS null_stays_null,
       e[1] = clip_embed_text('a cat') AND e[3] = clip_embed_text('a dog') AS same_as_single
FROM (SELECT clip_embed_texts(ARRAY['a cat', NULL, 'a dog']) AS e) s;
SELECT e[1] = clip_embed_image(pg_read_binary_file(:'moon')) AS same_as_single, e[2] IS NULL AS null_stays_null
FROM (SELECT clip_embed_images(ARRAY[pg_read_binary_file(:'moon'), NULL]) AS e) s;
SELECT clip_embed_texts('{}'::text[]) AS empty;
-- More inputs than one batch: still input order.
SET clip.batch_size = 2;
SELECT bool_and(e[i] = clip_embed_text('caption ' || i)) AS ordered_across_batches
FROM (SELECT clip_embed_texts(array_agg('caption ' || i ORDER BY i)) AS e FROM generate_series(1, 7) i) s,
     generate_series(1, 7) i;
RESET clip.batch_size;
-- The array functions find pgvector's type when its schema is not on the search_path.
SET search_path = pg_catalog;
SELECT array_length(public.clip_embed_texts(ARRAY['a', 'b']), 1) AS n_without_search_path;
RESET search_path;
-- A bad element names its index.
SELECT pg_temp.error_of(format('SELECT clip_embed_images(ARRAY[pg_read_binary_file(%L), NULL, %L::bytea])', :'moon', 'junk'));

-- Auto-embedding by trigger, for text and for images.
CREATE TABLE notes (id serial PRIMARY KEY, body text, embedding vector(32));
CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE OF body ON notes
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('body', 'embedding');
INSERT INTO notes (body) VALUES ('a photo of the moon'), ('a cat on a sofa'), (NULL);
SELECT id, embedding IS NOT NULL AS embedded, embedding = clip_embed_text(body) AS correct FROM notes ORDER BY id;
UPDATE notes SET body = 'a dog in the snow' WHERE id = 3;
SELECT id, embedding = clip_embed_text(body) AS correct FROM notes ORDER BY id;
SELECT body FROM notes ORDER BY embedding <=> clip_embed_text('a dog in the snow') LIMIT 1;

CREATE TABLE pictures (id serial PRIMARY KEY, name text, image bytea, embedding vector(32));
CREATE TRIGGER pictures_embed BEFORE INSERT OR UPDATE OF image ON pictures
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('image', 'embedding');
INSERT INTO pictures (name, image) VALUES ('moon', pg_read_binary_file(:'moon')), ('cat', pg_read_binary_file(:'cat'));
-- Found by image and by text.
SELECT name FROM pictures ORDER BY embedding <=> clip_embed_image(pg_read_binary_file(:'cat')) LIMIT 1;
SELECT name, round((1 - (embedding <=> clip_embed_text('the moon')))::numeric, 3) AS score
FROM pictures ORDER BY embedding <=> clip_embed_text('the moon');
-- A failing embedding aborts the statement: no row is half-written.
SELECT pg_temp.error_of($$INSERT INTO pictures (name, image) VALUES ('fine', (SELECT image FROM pictures LIMIT 1)), ('bad', 'junk')$$);
SELECT count(*) AS rows_after_failed_insert FROM pictures;
-- Misuse is a clear error.
CREATE TRIGGER pictures_wrong BEFORE INSERT ON pictures
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('no_such_column', 'embedding');
SELECT pg_temp.error_of($$INSERT INTO pictures (name) VALUES ('x')$$);
DROP TRIGGER pictures_wrong ON pictures;
CREATE TRIGGER pictures_wrong BEFORE INSERT ON pictures
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('id', 'embedding');
SELECT pg_temp.error_of($$INSERT INTO pictures (name) VALUES ('x')$$);
DROP TRIGGER pictures_wrong ON pictures;

-- Backfill: 3000 existing rows, one of them corrupt. The first call stops at the corrupt row, names it, and
-- keeps every row before it; after the row is fixed, a second call finishes. A counter proves that no row
-- was embedded twice.
CREATE TABLE archive (id int PRIMARY KEY, image bytea, embedding vector(32), embed_writes int NOT NULL DEFAULT 0);
CREATE FUNCTION pg_temp.count_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.embedding IS DISTINCT FROM OLD.embedding THEN NEW.embed_writes := OLD.embed_writes + 1; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER archive_count BEFORE UPDATE ON archive FOR EACH ROW EXECUTE FUNCTION pg_temp.count_writes();
INSERT INTO archive (id, image)
SELECT i, CASE WHEN i = 1750 THEN '\x00'::bytea ELSE pg_read_binary_file(:'pixel') END FROM generate_series(1, 3000) i;
\set VERBOSITY terse
CALL clip_backfill('archive', 'image', 'embedding', 250);
SELECT count(embedding) AS embedded_before_resume FROM archive;
UPDATE archive SET image = pg_read_binary_file(:'pixel') WHERE id = 1750;
CALL clip_backfill('archive', 'image', 'embedding', 250);
\set VERBOSITY default
SELECT count(*) AS rows, count(embedding) AS embedded, max(embed_writes) AS most_writes_per_row,
       bool_and(embedding = (SELECT embedding FROM archive WHERE id = 1)) AS all_correct
FROM archive;
-- Nothing left: a third call embeds nothing.
\set VERBOSITY terse
CALL clip_backfill('archive', 'image', 'embedding');
\set VERBOSITY default
CALL clip_backfill('archive', 'image', 'embedding', 0);
\echo :LAST_ERROR_SQLSTATE
CALL clip_backfill('archive', 'id', 'embedding');
\echo :LAST_ERROR_SQLSTATE

-- Zero-shot classification: a softmax over the labels, most probable first.
SELECT label, round(probability::numeric, 3) AS probability
FROM clip_classify(pg_read_binary_file(:'moon'), ARRAY['the moon', 'a cat', 'a cup of coffee']);
SELECT round(sum(probability)::numeric, 4) AS total
FROM clip_classify(pg_read_binary_file(:'moon'), ARRAY['the moon', 'a cat'], 'a blurry photo of {}');
SELECT pg_temp.error_of(format('SELECT * FROM clip_classify(pg_read_binary_file(%L), %L::text[])', :'moon', '{}'));
SELECT pg_temp.error_of(format('SELECT * FROM clip_classify(pg_read_binary_file(%L), ARRAY[NULL::text])', :'moon'));
SELECT pg_temp.error_of(format('SELECT * FROM clip_classify(pg_read_binary_file(%L), ARRAY[%L], %L)', :'moon', 'cat', 'no slot'));

-- Blending query vectors: "like this photo, but at night" is one ORDER BY.
SELECT clip_blend(clip_embed_text('a'), clip_embed_text('b'), 0) = clip_embed_text('a') AS weight_0_is_a,
       round(clip_similarity(clip_blend(clip_embed_text('a'), clip_embed_text('b'), 1), clip_embed_text('b'))::numeric, 4) AS weight_1_is_b,
       round(vector_norm(clip_blend(ARRAY[clip_embed_text('a'), clip_embed_text('b'), clip_embed_text('c')], ARRAY[0.5, 0.3, -0.2]))::numeric, 4) AS unit_norm;
SELECT name FROM pictures
ORDER BY embedding <=> clip_blend(clip_embed_image(pg_read_binary_file(:'cat')), clip_embed_text('at night'), 0.3) LIMIT 1;
-- Weights near real's limit: the same blend as their ratio, not an overflow.
SELECT clip_blend(ARRAY['[1,0]', '[1,0]']::vector[], ARRAY[3e38, 3e38]::real[]) = '[1,0]' AS huge_weights_blend;
SELECT pg_temp.error_of($$SELECT clip_blend(ARRAY['[1,0]'::vector], ARRAY[1, 2]::real[])$$);
SELECT pg_temp.error_of($$SELECT clip_blend('[1,0]'::vector, '[1,0,0]'::vector)$$);
SELECT pg_temp.error_of($$SELECT clip_blend(ARRAY['[1,0]', '[2,0]']::vector[], ARRAY[1, -1]::real[])$$);

DROP TABLE notes, pictures, archive;
