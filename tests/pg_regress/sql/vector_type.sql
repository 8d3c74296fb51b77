-- pgvector's vector type is looked up once per backend and forgotten when pg_type changes: after pgvector and
-- clip_search are dropped and created again in the same session (the type gets a new OID), the functions that
-- return vector[] return the new type.
CREATE DATABASE clip_vector_type;
\c clip_vector_type
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
SELECT pg_typeof(clip_embed_texts(ARRAY['a'])) AS before, array_length(clip_embed_texts(ARRAY['a', 'b']), 1) AS n;
DROP EXTENSION clip_search;
DROP EXTENSION vector;
CREATE EXTENSION clip_search CASCADE;
RESET client_min_messages;
SELECT pg_typeof(clip_embed_texts(ARRAY['a'])) AS after,
       (clip_embed_texts(ARRAY['a']))[1] = clip_embed_text('a') AS same_embedding;
-- pgvector in another schema, off the search_path: still found.
SET client_min_messages = warning;
DROP EXTENSION clip_search;
DROP EXTENSION vector;
CREATE SCHEMA elsewhere;
CREATE EXTENSION vector SCHEMA elsewhere;
CREATE EXTENSION clip_search;
RESET client_min_messages;
SELECT array_length(clip_embed_texts(ARRAY['a', 'b']), 1) AS n_elsewhere;
\c clip_regress
DROP DATABASE clip_vector_type;
