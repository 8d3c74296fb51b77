-- The table on every shard (run in the shard's database as a superuser, with clip.model_dir set on the shard):
--   psql -v dim=512 -f examples/sharding/shard.sql
-- Rows arrive from the coordinator through postgres_fdw with a NULL embedding; the shard's own trigger embeds them,
-- so inference runs on the shard that stores the row. The HNSW index serves the top-k queries the coordinator sends.
-- dim: the model's embedding dimension (512 for ViT-B-32; `SELECT clip_info()->'embed_dim'`).
\if :{?dim}
\else
    \set dim 512
\endif
CREATE EXTENSION IF NOT EXISTS clip_search CASCADE;
CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL, embedding vector(:dim));
CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE OF body ON notes
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('body', 'embedding');
CREATE INDEX notes_hnsw ON notes USING hnsw (embedding vector_cosine_ops);
