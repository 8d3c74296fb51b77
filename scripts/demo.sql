-- The demo's SQL: run by scripts/demo.sh against the private cluster, with :dir and :files set.
\pset footer off
CREATE EXTENSION IF NOT EXISTS clip_search CASCADE;
SELECT clip_info()->>'model' AS model, clip_info()->>'weights' AS weights, clip_info()->>'embed_dim' AS dim,
       clip_info()->>'onnxruntime_version' AS onnxruntime \gset
\echo Model :model (:weights), :dim dimensions, ONNX Runtime :onnxruntime

DROP TABLE IF EXISTS photos;
-- The embedding is a generated column: any client that inserts a photo gets it embedded in the same statement.
CREATE TABLE photos (
    id        serial PRIMARY KEY,
    name      text  NOT NULL,
    image     bytea NOT NULL,
    embedding vector(:dim) GENERATED ALWAYS AS (clip_embed_image(image)) STORED
);
\timing on
INSERT INTO photos (name, image)
SELECT name, pg_read_binary_file(:'dir' || '/' || name) FROM unnest(string_to_array(:'files', ',')) AS name;
\timing off
CREATE INDEX photos_embedding_hnsw ON photos USING hnsw (embedding vector_cosine_ops);
SELECT count(*) AS photos_embedded, pg_size_pretty(sum(length(image))) AS image_bytes FROM photos;

\echo
\echo Text-to-image search: the three nearest photos for each query
SELECT q AS query, string_agg(format('%s (%s)', name, round(score::numeric, 3)), ', ' ORDER BY score DESC) AS top_3
FROM unnest(ARRAY['an astronaut', 'a cat', 'a cup of coffee', 'a rocket launch', 'a horse in a field']) AS q,
LATERAL (SELECT name, 1 - (embedding <=> clip_embed_text(q)) AS score
         FROM photos ORDER BY embedding <=> clip_embed_text(q) LIMIT 3) AS hits
GROUP BY q ORDER BY q;

\echo Image-to-image search: photos nearest to chelsea.png, the query photo itself excluded
SELECT p.name, round((1 - (p.embedding <=> q.embedding))::numeric, 3) AS similarity
FROM photos p, (SELECT id, embedding FROM photos WHERE name = 'chelsea.png') q
WHERE p.id <> q.id ORDER BY p.embedding <=> q.embedding LIMIT 3;

\echo The plan: the HNSW index serves ORDER BY embedding <=> clip_embed_text(...)
\echo (enable_seqscan is off only because a 16-row table is cheaper to scan than to search)
SET enable_seqscan = off;
-- The query vector is folded into the plan as a constant of 512 numbers; show it shortened.
CREATE FUNCTION pg_temp.plan(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
    RETURN NEXT regexp_replace(line, '\[([-0-9.e]+,[-0-9.e]+),[-0-9.e,]+\]', '[\1,...]');
  END LOOP;
END $$;
SELECT pg_temp.plan($$SELECT name FROM photos ORDER BY embedding <=> clip_embed_text('a sunset over the ocean') LIMIT 5$$) AS "QUERY PLAN";
RESET enable_seqscan;

\echo These weights are random (seed 0): the rankings show the machinery, not the quality of CLIP.
\echo Real weights: see "Real weights" in the README, then set CLIP_MODEL_DIR and run again.
