#!/usr/bin/env bash
# Runs every test suite of clip_search, installing what is missing first (scripts/setup.sh). Safe to run twice.
#   1. the model core, pure Rust:             cargo test -p clip_core
#   2. the extension inside PostgreSQL:       cargo pgrx test (#[pg_test]s, a throwaway cluster)
#   3. SQL regression tests with expected output (tests/pg_regress), on the private 'test' cluster
#   4. the SQLAlchemy example's tests (examples/sqlalchemy), against the same cluster
#   5. crash recovery: an immediate shutdown during inserts (tests/crash_recovery.sh)
#   6. the gallery: its HTTP API and a headless-Chromium test of its page (scripts/test_gallery.sh)
#   7. the Debian package (tests/package_install.sh), run before 3: suites 3 to 6 then run on the installed package
#   8. scaling out, each on its own clusters: a hot standby (tests/scale_replica.sh) and shards (tests/scale_sharding.sh)
#   9. int8 models on an emulated AVX2 CPU without VNNI (tests/int8_avx2.sh, qemu-user)
#  10. the background worker that keeps watched columns embedded, on its own cluster (tests/watch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2

scripts/setup.sh
# The server reads the fixture model and images from this checkout as the 'postgres' user.
if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -r "$ROOT/tests/fixtures/tiny-model/manifest.json"; then
  die "the 'postgres' user cannot read $ROOT/tests/fixtures: clone into a folder that others can read"
fi
passed=0 failed=0
suite() {
  local name=$1; shift
  log "suite: $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); log "suite FAILED: $name"; fi
}

pgrx_tests() {
  local data="$DEPS/pgrx-test-data"
  mkdir -p "$data"
  local runas=()
  if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$data"; runas=(--runas postgres); fi
  install_onnxruntime
  cargo pgrx test "pg$PG_MAJOR" "${runas[@]}" --pgdata "$data"
}

# The private 'test' cluster with the tiny fixture model, shared by the SQL-level suites.
test_cluster() {
  # The Debian package (a release build), installed with apt-get: what users install is what gets tested.
  scripts/package.sh --install >/dev/null
  # The earlier releases' install scripts, for the upgrade test.
  $([[ $(id -u) -ne 0 ]] && echo sudo) install -m 0644 tests/upgrade/clip_search--*.sql "$(pg_sharedir)/extension/"
  cluster_env test
  scripts/cluster.sh start test
  scripts/cluster.sh psql test -c "LOAD 'clip_search'" \
    -c "ALTER SYSTEM SET clip.model_dir = '$ROOT/tests/fixtures/tiny-model'" -c "SELECT pg_reload_conf()" >/dev/null
}

sql_regression() {
  local out="$ROOT/target/pg_regress"
  rm -rf "$out" && mkdir -p "$out"
  local tests
  tests=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
  # pg_regress runs psql in the output directory and the server reads fixtures: both must reach them.
  [[ $(id -u) -eq 0 ]] && chown -R postgres:postgres "$out"
  local status=0
  "$(pg_pkglibdir)/pgxs/src/test/regress/pg_regress" --host="$PGSOCKET" \
    --port="$PGPORT" --user=postgres --dbname=clip_regress --inputdir=tests/pg_regress --outputdir="$out" \
    --bindir="$PG_BIN" $tests || status=$?
  [[ -f "$out/regression.diffs" ]] && head -200 "$out/regression.diffs"
  return $status
}

orm_example() {
  local venv="$DEPS/venv-examples"
  if ! "$venv/bin/python" -c "import sqlalchemy, pgvector, psycopg, pytest" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r examples/sqlalchemy/requirements.txt
  fi
  (cd examples/sqlalchemy && "$venv/bin/python" -m pytest -q -p no:cacheprovider)
}

suite "model core (cargo test -p clip_core)" cargo test -p clip_core
suite "int8 on emulated AVX2 (qemu -cpu Haswell)" tests/int8_avx2.sh
suite "extension (cargo pgrx test)" pgrx_tests
suite "Debian package (apt-get install, CREATE EXTENSION, apt-get remove)" tests/package_install.sh
trap 'scripts/cluster.sh stop test' EXIT
test_cluster
suite "SQL regression (pg_regress)" sql_regression
suite "SQLAlchemy example (pytest)" orm_example
suite "crash recovery (immediate shutdown during inserts)" tests/crash_recovery.sh
suite "background worker (clip_watch, shared_preload_libraries)" tests/watch.sh
suite "scaling out: hot standby (pg_basebackup, streaming replication)" tests/scale_replica.sh
suite "scaling out: shards (partitioning, postgres_fdw)" tests/scale_sharding.sh
suite "gallery (API and headless browser)" scripts/test_gallery.sh

echo "test suites: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
