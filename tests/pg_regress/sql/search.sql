-- Search in SQL: a table of real photos embedded by a generated column, an HNSW index, and queries in every
-- direction. Scores come from the tiny random-weight test model: they check the machinery, not CLIP's quality.
CREATE EXTENSION IF NOT EXISTS clip_search CASCADE;
\getenv abs_srcdir PG_ABS_SRCDIR
\set images :abs_srcdir '/../fixtures/images/'

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
                  'chelsea_rgb_150x100.bmp', 'astronaut_rgb_lzw_160x160.tiff']) AS name;
CREATE INDEX photos_embedding_hnsw ON photos USING hnsw (embedding vector_cosine_ops);
ANALYZE photos;
SELECT count(*) AS photos, count(embedding) AS embedded FROM photos;

-- The same photo in two formats embeds close together.
SELECT round(clip_similarity(a.embedding, b.embedding)::numeric, 2) AS jpg_vs_bmp
FROM photos a, photos b WHERE a.name = 'chelsea_rgb_451x300.jpg' AND b.name = 'chelsea_rgb_150x100.bmp';

-- A tiny table is cheaper to scan than to search; turn scans off to show what serves the queries.
SET enable_seqscan = off;

-- Text to image.
EXPLAIN (COSTS OFF) SELECT name FROM photos ORDER BY embedding <=> clip_embed_text('a cat') LIMIT 3;
SELECT name, round((1 - (embedding <=> clip_embed_text('a cat')))::numeric, 3) AS score
FROM photos ORDER BY embedding <=> clip_embed_text('a cat') LIMIT 3;

-- Image to image, the query photo excluded.
EXPLAIN (COSTS OFF)
SELECT p.name FROM photos p, (SELECT id, embedding FROM photos WHERE name = 'chelsea_rgb_451x300.jpg') q
WHERE p.id <> q.id ORDER BY p.embedding <=> q.embedding LIMIT 3;
SELECT p.name, round((1 - (p.embedding <=> q.embedding))::numeric, 3) AS score
FROM photos p, (SELECT id, embedding FROM photos WHERE name = 'chelsea_rgb_451x300.jpg') q
WHERE p.id <> q.id ORDER BY p.embedding <=> q.embedding LIMIT 3;

-- Image to text: rank captions for a photo.
CREATE TABLE captions (id serial PRIMARY KEY, caption text NOT NULL,
                       embedding vector(32) GENERATED ALWAYS AS (clip_embed_text(caption)) STORED);
INSERT INTO captions (caption)
VALUES ('a cat'), ('an astronaut'), ('a cup of coffee'), ('a rocket'), ('the moon'), ('a cameraman');
CREATE INDEX captions_embedding_hnsw ON captions USING hnsw (embedding vector_cosine_ops);
EXPLAIN (COSTS OFF) SELECT caption FROM captions
ORDER BY embedding <=> clip_embed_image(pg_read_binary_file(:'images' || 'moon_l_512x512.png')) LIMIT 3;
SELECT caption, round(clip_similarity(caption, pg_read_binary_file(:'images' || 'moon_l_512x512.png'))::numeric, 3) AS score
FROM captions ORDER BY embedding <=> clip_embed_image(pg_read_binary_file(:'images' || 'moon_l_512x512.png')) LIMIT 3;
RESET enable_seqscan;

-- Results agree with an exact scan.
SELECT array_agg(name ORDER BY d) = (SELECT array_agg(name ORDER BY d) FROM
         (SELECT name, embedding <=> clip_embed_text('a rocket') AS d FROM photos ORDER BY d LIMIT 3) exact)
       AS index_matches_exact
FROM (SELECT name, embedding <=> clip_embed_text('a rocket') AS d FROM photos ORDER BY d LIMIT 3) hnsw;

DROP TABLE photos, captions;
