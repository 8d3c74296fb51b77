-- Upgrades: install the previous version (0.1.0), store embeddings, ALTER EXTENSION UPDATE, and check that the
-- data and every function work. scripts/test.sh puts tests/upgrade/clip_search--0.1.0.sql where PostgreSQL
-- finds it.
CREATE DATABASE clip_upgrade;
\c clip_upgrade
SET client_min_messages = warning;
CREATE EXTENSION clip_search VERSION '0.1.0' CASCADE;
RESET client_min_messages;
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, embedding vector(32));
INSERT INTO docs SELECT i, 'document number ' || i, clip_embed_text('document number ' || i) FROM generate_series(1, 50) i;
CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_cosine_ops);
SELECT to_regprocedure('clip_embed_texts(text[])') IS NULL AS batch_function_absent_before;

ALTER EXTENSION clip_search UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'clip_search';

-- The upgraded extension has exactly the functions of a fresh install (compare functions.out).
SELECT p.oid::regprocedure AS function, p.prorettype::regtype AS returns, p.provolatile AS volatility
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'clip_search'
ORDER BY 1::text;

-- Stored vectors are still what the functions compute, and the index still serves searches.
SELECT count(*) AS rows, bool_and(embedding = clip_embed_text(body)) AS unchanged FROM docs;
SET enable_seqscan = off;
SELECT id FROM docs ORDER BY embedding <=> clip_embed_text('document number 7') LIMIT 1;
RESET enable_seqscan;
-- The new functions work on the old data.
SELECT (clip_embed_texts(ARRAY[body]))[1] = embedding AS batch_matches FROM docs WHERE id = 1;
ALTER TABLE docs ADD COLUMN embedding2 vector(32);
SET client_min_messages = warning;
CALL clip_backfill('docs', 'body', 'embedding2', 20);
RESET client_min_messages;
SELECT bool_and(embedding2 = embedding) AS backfill_matches FROM docs;

\c clip_regress
DROP DATABASE clip_upgrade;
