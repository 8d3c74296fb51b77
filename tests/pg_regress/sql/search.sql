-- Search in SQL: a table of real photos embedded by a generated column, an HNSW index, and queries in every
-- direction. Scores come from the tiny random-weight test model: they check the machinery, not CLIP's quality.
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
\set moon :images 'moon_l_512x512.png'

CREATE TABLE photos (
    id        serial PRIMARY KEY,
    name      text  NOT NULL,
    image     bytea NOT NULL,
    embedding vector(32) GENERATED ALWAYS AS (clip_embed_image(image)) STORED
);
INSERT INTO photos (name, image)
SELECT name, pg_read_binary_file(:'images' || name)
FROM unnest(ARRAY['astronaut_rgb_posterized_300x250.png', 'chelsea_rgb_451x300.jpg', 'coffee_lossy_300x200.webp',
                  'rocket_rgb_progressive_640x427.jpg', 'camera_l_128x128.gif', 'moon_l_512x512.png',
                  'chelsea_rgb_150x100.bmp', 'astronaut_rgb_lzw_128x128.tiff']) AS name;
CREATE INDEX photos_embedding_hnsw ON photos USING hnsw (embedding vector_cosine_ops);
ANALYZE photos;
SELECT count(*) AS photos, count(embedding) AS embedded FROM photos;

-- The same photo in two formats and sizes embeds close together.
SELECT round(clip_similarity(a.embedding, b.embedding)::numeric, 2) AS jpg_vs_bmp
FROM photos a, photos b WHERE a.name = 'chelsea_rgb_451x300.jpg' AND b.name = 'chelsea_rgb_150x100.bmp';

-- A tiny table is cheaper to scan than to search; turn scans off to show what serves the queries.
SET enable_seqscan = off;
-- Plans, without the query vector's values: they belong to the model, not to the plan.
CREATE FUNCTION pg_temp.plan(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
    RETURN NEXT regexp_replace(line, '''\[[-0-9.e,]+\]''::vector', '<query vector>');
  END LOOP;
END $$;

-- Text to image.
SELECT pg_temp.plan($$SELECT name FROM photos ORDER BY embedding <=> clip_embed_text('a cat') LIMIT 3$$);
SELECT name, round((1 - (embedding <=> clip_embed_text('a cat')))::numeric, 3) AS score
FROM photos ORDER BY embedding <=> clip_embed_text('a cat') LIMIT 3;

-- Image to image, the query photo excluded. The scalar subquery becomes a parameter the index can take.
SELECT pg_temp.plan($$SELECT name FROM photos WHERE name <> 'chelsea_rgb_451x300.jpg'
  ORDER BY embedding <=> (SELECT embedding FROM photos WHERE name = 'chelsea_rgb_451x300.jpg') LIMIT 3$$);
SELECT name, round((1 - (embedding <=> (SELECT embedding FROM photos WHERE name = 'chelsea_rgb_451x300.jpg')))::numeric, 3) AS score
FROM photos WHERE name <> 'chelsea_rgb_451x300.jpg'
ORDER BY embedding <=> (SELECT embedding FROM photos WHERE name = 'chelsea_rgb_451x300.jpg') LIMIT 3;

-- Image to text: rank captions for a photo.
CREATE TABLE captions (id serial PRIMARY KEY, caption text NOT NULL,
                       embedding vector(32) GENERATED ALWAYS AS (clip_embed_text(caption)) STORED);
INSERT INTO captions (caption)
VALUES ('a cat'), ('an astronaut'), ('a cup of coffee'), ('a rocket'), ('the moon'), ('a cameraman');
CREATE INDEX captions_embedding_hnsw ON captions USING hnsw (embedding vector_cosine_ops);
SELECT pg_temp.plan(format($$SELECT caption FROM captions
  ORDER BY embedding <=> (SELECT clip_embed_image(pg_read_binary_file(%L))) LIMIT 3$$, :'moon'));
SELECT caption, round(clip_similarity(caption, pg_read_binary_file(:'moon'))::numeric, 3) AS score
FROM captions ORDER BY embedding <=> (SELECT clip_embed_image(pg_read_binary_file(:'moon'))) LIMIT 3;

-- Text to text.
SELECT pg_temp.plan($$SELECT caption FROM captions ORDER BY embedding <=> clip_embed_text('a kitten') LIMIT 2$$);
SELECT caption FROM captions ORDER BY embedding <=> clip_embed_text('a kitten') LIMIT 2;
-- The index gives what an exact scan gives.
SELECT (SELECT array_agg(name) FROM (SELECT name FROM photos ORDER BY embedding <=> clip_embed_text('a rocket') LIMIT 3) i)
     = (SELECT array_agg(name) FROM (SELECT name FROM photos
                                     ORDER BY (embedding <=> clip_embed_text('a rocket')) + 0 LIMIT 3) e) AS index_matches_exact;

RESET enable_seqscan;

DROP TABLE photos, captions;
