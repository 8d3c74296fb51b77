-- pgvector HNSW part of scripts/bench.sh: recall@10 against exact search, and query latency, at several
-- hnsw.ef_search values. psql variables: rows, queries, dim, m, ef_construction, workers (parallel workers for the
-- build: the benchmark's thread count minus one), ef_list (an int[] literal). Prints one JSON object per line.
--
-- The vectors are random but clustered, like embeddings: each is the normalised sum of one of 1000 random
-- centres and two of 4000 smaller random offsets (uniform coordinates), drawn with a fixed seed. Uniform random
-- vectors in 512 dimensions would have no neighbourhood structure at all, which no real embedding set resembles.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
DROP TABLE IF EXISTS bench.hnsw_items, bench.hnsw_queries, bench.hnsw_pool;
SELECT setseed(0.5);
CREATE TABLE bench.hnsw_pool AS
  SELECT g AS id, (SELECT array_agg((random() - 0.5) * scale) FROM generate_series(1, :dim),
                     (SELECT CASE WHEN g <= 1000 THEN 1.0 ELSE 0.7 END) s(scale))::vector(:dim) AS v
  FROM generate_series(1, 5000) g;
CREATE TABLE bench.hnsw_items (id int, v vector(:dim));
CREATE TABLE bench.hnsw_queries (id int, v vector(:dim), exact int[]);
-- A 512-d vector is 2 KB, just over the TOAST threshold: stored out of line, every distance would first fetch it
-- from the TOAST table (about 3x slower exact search here). PLAIN keeps it in the row.
ALTER TABLE bench.hnsw_items ALTER COLUMN v SET STORAGE PLAIN;
ALTER TABLE bench.hnsw_queries ALTER COLUMN v SET STORAGE PLAIN;
CREATE FUNCTION pg_temp.draw(n int) RETURNS TABLE (id int, v vector) LANGUAGE sql AS $$
  SELECT k.i, l2_normalize(c.v + a.v + b.v)
  FROM (SELECT i, 1 + floor(random() * 1000)::int ci, 1001 + floor(random() * 4000)::int ai,
               1001 + floor(random() * 4000)::int bi
        FROM generate_series(1, n) i) k
  JOIN bench.hnsw_pool c ON c.id = k.ci JOIN bench.hnsw_pool a ON a.id = k.ai JOIN bench.hnsw_pool b ON b.id = k.bi
$$;
INSERT INTO bench.hnsw_items SELECT * FROM pg_temp.draw(:rows);
INSERT INTO bench.hnsw_queries SELECT *, NULL FROM pg_temp.draw(:queries);
VACUUM ANALYZE bench.hnsw_items;

-- Ground truth, before the index exists: a sequential scan per query.
SELECT clock_timestamp() AS t0 \gset
UPDATE bench.hnsw_queries q
SET exact = (SELECT array_agg(id) FROM (SELECT i.id FROM bench.hnsw_items i ORDER BY i.v <=> q.v LIMIT 10) s);
SELECT json_build_object('hnsw_exact_ms', extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000 / :queries);

SET maintenance_work_mem = '1GB';
SET max_parallel_maintenance_workers = :workers;
SELECT clock_timestamp() AS t0 \gset
CREATE INDEX hnsw_items_v ON bench.hnsw_items USING hnsw (v vector_cosine_ops)
  WITH (m = :m, ef_construction = :ef_construction);
SELECT json_build_object('hnsw_build_s', extract(epoch FROM clock_timestamp() - :'t0'::timestamptz),
                         'hnsw_index_mb', pg_relation_size('bench.hnsw_items_v') / 1048576.0,
                         'hnsw_table_mb', pg_relation_size('bench.hnsw_items') / 1048576.0);

CREATE FUNCTION pg_temp.uses_index(qv vector) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN SELECT id FROM bench.hnsw_items ORDER BY v <=> $1 LIMIT 10' USING qv LOOP
    IF line LIKE '%Index Scan using hnsw_items_v%' THEN
      RETURN true;
    END IF;
  END LOOP;
  RETURN false;
END $$;

-- Recall@10 and per-query milliseconds at one ef_search.
CREATE FUNCTION pg_temp.search(ef int) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
  q record;
  t0 timestamptz;
  got int[];
  hits int := 0;
  ms float8[] := '{}';
BEGIN
  PERFORM set_config('hnsw.ef_search', ef::text, true);
  FOR q IN SELECT * FROM bench.hnsw_queries ORDER BY id LOOP
    IF cardinality(ms) = 0 AND NOT pg_temp.uses_index(q.v) THEN
      RAISE EXCEPTION 'the search query does not use the HNSW index';
    END IF;
    t0 := clock_timestamp();
    SELECT array_agg(s.id) INTO got FROM (SELECT i.id FROM bench.hnsw_items i ORDER BY i.v <=> q.v LIMIT 10) s;
    ms := ms || extract(epoch FROM clock_timestamp() - t0)::float8 * 1000;
    hits := hits + (SELECT count(*) FROM unnest(got) g WHERE g = ANY (q.exact));
  END LOOP;
  RETURN json_build_object('ef_search', ef, 'recall_at_10', hits::float8 / (10 * cardinality(ms)), 'ms', ms);
END $$;

SELECT pg_temp.search(max(ef)) IS NOT NULL AS warm FROM unnest(:'ef_list'::int[]) ef \gset
SELECT json_build_object('hnsw_search', json_agg(pg_temp.search(ef) ORDER BY ef)) FROM unnest(:'ef_list'::int[]) ef;
DROP TABLE bench.hnsw_items, bench.hnsw_queries, bench.hnsw_pool;
