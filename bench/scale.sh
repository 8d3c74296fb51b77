#!/usr/bin/env bash
# Collections larger than memory: HNSW over float vectors, over halfvec (half the size) and over binary-quantized
# vectors re-ranked by exact cosine, on N clustered random 512-d unit vectors (bench/scale.py). Reports each index's
# size, build time, and recall@10 and latency at a few hnsw.ef_search values, as a markdown table (bench/scale.sql).
#   bench/scale.sh [N]        N vectors (default 1000000); QUERIES (default 100) queries from the same distribution
# MAINTENANCE_WORK_MEM (default 4GB) must hold the float index's graph (about 3 KB per vector). Runs on its own
# cluster 'scale-bench' (port 55546, data in .deps/cluster-scale-bench), made afresh and stopped at the end; the
# table is also written to target/bench-scale-N.md. Needs numpy in .venv (scripts/setup.sh --python) and pgvector.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
n=${1:-1000000}
queries=${QUERIES:-100}
"$VENV/bin/python" -c "import numpy" 2>/dev/null || die "bench/scale.sh needs numpy in $VENV (scripts/setup.sh --python)"
bench() { scripts/cluster.sh psql scale-bench "$@"; }
trap 'scripts/cluster.sh stop scale-bench' EXIT

scripts/cluster.sh stop scale-bench
rm -rf "$(cluster_env scale-bench && echo "$PGDATA")"
scripts/cluster.sh start scale-bench
bench -c "ALTER SYSTEM SET shared_buffers = '1GB'" >/dev/null
scripts/cluster.sh stop scale-bench && scripts/cluster.sh start scale-bench
bench -c "CREATE DATABASE clip_scale" >/dev/null
bench -d clip_scale <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION vector;
-- PLAIN keeps each 2 KB vector in its row instead of TOAST (faster exact search and re-ranking).
CREATE TABLE items (id bigint NOT NULL, embedding vector(512) NOT NULL);
ALTER TABLE items ALTER COLUMN embedding SET STORAGE PLAIN;
CREATE TABLE queries (id bigint NOT NULL, embedding vector(512) NOT NULL);
SQL
log "scale benchmark: loading $n vectors and $queries queries"
"$VENV/bin/python" bench/scale.py items "$n" | bench -d clip_scale -c "COPY items FROM STDIN (FORMAT binary)"
"$VENV/bin/python" bench/scale.py queries "$queries" | bench -d clip_scale -c "COPY queries FROM STDIN (FORMAT binary)"
bench -d clip_scale -c "VACUUM ANALYZE items" -c "VACUUM ANALYZE queries"
log "scale benchmark: exact search, three index builds and the searches (long at 1 M vectors)"
mkdir -p target
bench -d clip_scale -v maintenance_work_mem="${MAINTENANCE_WORK_MEM:-4GB}" -f bench/scale.sql | tee "target/bench-scale-$n.md"
