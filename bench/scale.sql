-- The measurement of bench/scale.sh, on its tables items (id, embedding vector(512)) and queries (the same), loaded
-- without indexes. Computes each query's exact top 10, builds three HNSW indexes (float, halfvec, binary), then for
-- a few hnsw.ef_search values measures recall@10 against the exact top 10 and the latency of each query inside the
-- server (planning included, the client's round trip not), after one unmeasured pass. Prints a markdown table.
-- psql variable: maintenance_work_mem (the HNSW graph must fit in it, or the build becomes much slower).
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET maintenance_work_mem = :'maintenance_work_mem';
SET max_parallel_maintenance_workers = 1;   -- a shared 2-core machine: one build worker
SET max_parallel_workers_per_gather = 0;    -- exact search on one core, as the index searches run

CREATE TEMP TABLE truth (query_id bigint PRIMARY KEY, ids bigint[] NOT NULL, ms double precision NOT NULL);
CREATE TEMP TABLE builds (kind text PRIMARY KEY, index_name text NOT NULL, seconds double precision NOT NULL);
CREATE TEMP TABLE runs (kind text, ef_search int, query_id bigint, recall double precision, ms double precision);

-- Exact top 10: no index exists yet, so this is a sequential scan with a top-N sort.
DO $$
DECLARE
    q record;
    started timestamptz;
    found bigint[];
BEGIN
    FOR q IN SELECT id, embedding FROM queries ORDER BY id LOOP
        started := clock_timestamp();
        EXECUTE 'SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY embedding <=> $1, id LIMIT 10) top'
            INTO found USING q.embedding;
        INSERT INTO truth VALUES (q.id, found, 1000 * extract(epoch FROM clock_timestamp() - started));
    END LOOP;
END
$$;

-- The three indexes, pgvector's defaults (m = 16, ef_construction = 64).
DO $$
DECLARE
    b record;
    started timestamptz;
BEGIN
    FOR b IN SELECT * FROM (VALUES
        ('float', 'items_float', 'CREATE INDEX items_float ON items USING hnsw (embedding vector_cosine_ops)'),
        ('half', 'items_half',
         'CREATE INDEX items_half ON items USING hnsw ((embedding::halfvec(512)) halfvec_cosine_ops)'),
        ('binary', 'items_binary',
         'CREATE INDEX items_binary ON items USING hnsw ((binary_quantize(embedding)::bit(512)) bit_hamming_ops)')
    ) AS v(kind, index_name, ddl) LOOP
        started := clock_timestamp();
        EXECUTE b.ddl;
        INSERT INTO builds VALUES (b.kind, b.index_name, extract(epoch FROM clock_timestamp() - started));
    END LOOP;
END
$$;
ANALYZE items;

-- The searches: $1 the query vector, $2 the number of binary candidates re-ranked by exact cosine (= ef_search:
-- an HNSW scan returns at most ef_search rows).
DO $$
DECLARE
    c record;
    q record;
    pass int;
    started timestamptz;
    found bigint[];
BEGIN
    PERFORM set_config('enable_seqscan', 'off', true);
    FOR c IN SELECT * FROM (VALUES
        ('float', 'SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY embedding <=> $1 LIMIT 10) top'),
        ('half', 'SELECT array_agg(id) FROM (SELECT id FROM items'
                 ' ORDER BY embedding::halfvec(512) <=> $1::halfvec(512) LIMIT 10) top'),
        ('binary', 'SELECT array_agg(id) FROM (SELECT id FROM ('
                   'SELECT id, embedding FROM items ORDER BY binary_quantize(embedding)::bit(512) <~> binary_quantize($1)'
                   ' LIMIT $2) candidates ORDER BY embedding <=> $1 LIMIT 10) top')
    ) AS v(kind, search), LATERAL (SELECT unnest(CASE v.kind WHEN 'binary' THEN ARRAY[40, 100, 200, 400]
                                                                 ELSE ARRAY[40, 100, 200] END)) AS e(ef_search)
    LOOP
        PERFORM set_config('hnsw.ef_search', c.ef_search::text, true);
        FOR pass IN 1..2 LOOP   -- the first pass warms the caches and is not recorded
            FOR q IN SELECT id, embedding FROM queries ORDER BY id LOOP
                started := clock_timestamp();
                EXECUTE c.search INTO found USING q.embedding, c.ef_search;
                IF pass = 2 THEN
                    INSERT INTO runs
                    SELECT c.kind, c.ef_search, q.id,
                           (SELECT count(*) FROM unnest(found) f WHERE f = ANY (t.ids)) / 10.0,
                           1000 * extract(epoch FROM clock_timestamp() - started)
                    FROM truth t WHERE t.query_id = q.id;
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
END
$$;

-- Sanity: every search used its index (a sequential scan would make the recall 1.0 and the numbers meaningless).
SELECT pg_stat_force_next_flush() \gset
SELECT count(*) > 0 AS index_scans_missing FROM builds b
JOIN pg_stat_user_indexes s ON s.indexrelname = b.index_name WHERE s.idx_scan = 0 \gset
\if :index_scans_missing
    \echo 'an index was never used: the table below would be wrong'
    SELECT 1 / 0;
\endif

\pset format unaligned
\pset tuples_only on
SELECT format('%s vectors of 512 dimensions (%s clusters), %s queries; table %s (vectors stored PLAIN)',
              (SELECT count(*) FROM items), 1000, (SELECT count(*) FROM queries),
              pg_size_pretty(pg_table_size('items')));
SELECT '';
SELECT '| index | ef_search | re-ranked candidates | index size | build time | recall@10 | p50 latency | p95 latency |';
SELECT '| --- | --- | --- | --- | --- | --- | --- | --- |';
SELECT format('| %s | %s | %s | %s | %s s | %s | %s ms | %s ms |',
              CASE r.kind WHEN 'float' THEN 'vector (float4)' WHEN 'half' THEN 'halfvec'
                          ELSE 'bit, re-ranked by exact cosine' END,
              r.ef_search, CASE r.kind WHEN 'binary' THEN r.ef_search::text ELSE '-' END,
              pg_size_pretty(pg_relation_size(b.index_name::regclass)), round(b.seconds::numeric, 1),
              round(avg(r.recall)::numeric, 3),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY r.ms)::numeric, 2),
              round(percentile_cont(0.95) WITHIN GROUP (ORDER BY r.ms)::numeric, 2))
FROM runs r JOIN builds b USING (kind)
GROUP BY r.kind, r.ef_search, b.index_name, b.seconds
ORDER BY array_position(ARRAY['float', 'half', 'binary'], r.kind), r.ef_search;
SELECT format('| exact (sequential scan) | - | - | - | - | 1.000 | %s ms | %s ms |',
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
              round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 2))
FROM truth;
