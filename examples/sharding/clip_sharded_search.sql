-- Top-k search over a table partitioned across shards (partitions that are postgres_fdw foreign tables; local
-- partitions work too). PL/pgSQL functions, created on the coordinator: psql -f examples/sharding/clip_sharded_search.sql
--
--   SELECT * FROM clip_sharded_search('notes', clip_embed_text('a red boat'), 10);
--
-- The query vector is computed once, on the coordinator, and passed as $1. Every leaf partition gets its own
-- `SELECT id, embedding <=> $1 ... ORDER BY embedding <=> $1 LIMIT k`, which postgres_fdw sends whole to its shard
-- (the foreign server needs `extensions 'vector'`, or <=> stays on the coordinator and every row is fetched); the
-- shard's HNSW index answers it. The branches are a UNION ALL, so with `async_capable 'true'` on the servers all
-- shards work at the same time; the coordinator merges the k x shards candidates by (distance, id).
-- The merge is exact: the result is the top k of the union of the shards' top k's, so it equals a single node's
-- exact top k whenever each shard's answer is exact (hnsw.ef_search at least the shard's row count makes an HNSW
-- search visit every row; otherwise it has each shard's HNSW recall, no worse than one node's index).
-- Exactly equal distances at the k-th place may be broken differently than by id.
--
-- A shard that cannot be reached fails the search (SQLSTATE class 08, the shard named) instead of giving a silently
-- partial answer; allow_partial => true gives the other shards' top k with a WARNING naming the missing partitions.

-- The statement clip_sharded_search runs, with the query vector as $1: for EXPLAIN VERBOSE (PREPARE it) or reuse.
CREATE OR REPLACE FUNCTION clip_sharded_search_sql(parent regclass, k integer,
                                                   id_column name DEFAULT 'id', vector_column name DEFAULT 'embedding')
RETURNS text LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    branches text;
BEGIN
    IF k < 1 THEN
        RAISE EXCEPTION 'clip_sharded_search: k must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(format('(SELECT %1$I::bigint AS id, %2$I <=> $1 AS distance, %3$L::regclass AS partition'
                             ' FROM ONLY %3$s ORDER BY %2$I <=> $1 LIMIT %4$s)',
                             id_column, vector_column, relid, k),
                      E'\nUNION ALL\n' ORDER BY relid::text)
    INTO branches
    FROM pg_partition_tree(parent) WHERE isleaf;
    IF branches IS NULL THEN
        RAISE EXCEPTION 'clip_sharded_search: % has no partitions', parent USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Ordered by an expression of the distance, which the branches' outputs are not sorted by: the planner then
    -- appends them (asynchronously) and sorts the candidates, where ordering by the distance itself lets
    -- PostgreSQL 18 merge the branches' sorted outputs (a Merge Append, which reads the shards one after another).
    RETURN format(E'SELECT id, distance, partition FROM (\n%s\n) AS candidates\n'
                  'ORDER BY distance OPERATOR(pg_catalog.+) 0, id LIMIT %s', branches, k);
END
$$;

CREATE OR REPLACE FUNCTION clip_sharded_search(parent regclass, query vector, k integer,
                                               allow_partial boolean DEFAULT false,
                                               id_column name DEFAULT 'id', vector_column name DEFAULT 'embedding')
RETURNS TABLE (id bigint, distance double precision, partition regclass) LANGUAGE plpgsql STRICT AS $$
DECLARE
    leaf regclass;
    missing text[] := '{}';
    ids bigint[] := '{}';
    distances double precision[] := '{}';
    partitions regclass[] := '{}';
    leaf_ids bigint[];
    leaf_distances double precision[];
    message text;
    detail text;
BEGIN
    -- One statement for all shards. Its ORDER BY ... LIMIT sorts every candidate before returning a row, so a shard
    -- failing fails it before anything is returned.
    RETURN QUERY EXECUTE clip_sharded_search_sql(parent, k, id_column, vector_column) USING query;
EXCEPTION WHEN connection_exception THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    IF NOT allow_partial THEN
        RAISE EXCEPTION 'clip_sharded_search: a shard of % cannot be reached: %', parent, message
            USING ERRCODE = SQLSTATE, DETAIL = coalesce(detail, ''),
                  HINT = 'The other shards'' rows alone could miss part of the top k; '
                         'pass allow_partial => true to accept such a partial answer.';
    END IF;
    -- Partial answer: each partition on its own; the unreachable ones are left out and named.
    FOR leaf IN SELECT relid FROM pg_partition_tree(parent) WHERE isleaf ORDER BY relid::text LOOP
        BEGIN
            EXECUTE format('SELECT array_agg(%1$I::bigint), array_agg(%2$I <=> $1) FROM'
                           ' (SELECT %1$I, %2$I FROM ONLY %3$s ORDER BY %2$I <=> $1 LIMIT %4$s) AS top',
                           id_column, vector_column, leaf, k)
                INTO leaf_ids, leaf_distances USING query;
            ids := ids || coalesce(leaf_ids, '{}');
            distances := distances || coalesce(leaf_distances, '{}');
            partitions := partitions || array_fill(leaf, ARRAY[coalesce(cardinality(leaf_ids), 0)]);
        EXCEPTION WHEN connection_exception THEN
            missing := missing || leaf::text;
        END;
    END LOOP;
    IF cardinality(missing) > 0 THEN
        RAISE WARNING 'clip_sharded_search: partial result without % (cannot be reached)', array_to_string(missing, ', ');
    END IF;
    RETURN QUERY SELECT c.id, c.distance, c.partition FROM unnest(ids, distances, partitions) AS c(id, distance, partition)
                 ORDER BY c.distance, c.id LIMIT k;
END
$$;
