#!/usr/bin/env bash
# Runs every test suite of clip_search, installing what is missing first (scripts/setup.sh). Safe to run twice.
#   1. the model core, pure Rust:             cargo test -p clip_core
#   2. the extension inside PostgreSQL:       cargo pgrx test (#[pg_test]s, a throwaway cluster)
#   3. SQL regression tests with expected output (tests/pg_regress), on the private 'test' cluster
#   4. the SQLAlchemy example's tests (examples/sqlalchemy), against the same cluster
#   5. crash recovery: an immediate shutdown during inserts (tests/crash_recovery.sh)
#   6. the gallery: its HTTP API and a headless-Chromium test of its page (scripts/test_gallery.sh)
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
  cargo pgrx test pg15 "${runas[@]}" --pgdata "$data"
}

# The private 'test' cluster with the tiny fixture model, shared by the SQL-level suites.
test_cluster() {
  scripts/install.sh --debug
  # The previous release's install script, for the upgrade test.
  $([[ $(id -u) -ne 0 ]] && echo sudo) install -m 0644 tests/upgrade/clip_search--0.1.0.sql "$(pg_sharedir)/extension/"
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
suite "extension (cargo pgrx test)" pgrx_tests
trap 'scripts/cluster.sh stop test' EXIT
test_cluster
suite "SQL regression (pg_regress)" sql_regression
suite "SQLAlchemy example (pytest)" orm_example
suite "crash recovery (immediate shutdown during inserts)" tests/crash_recovery.sh
suite "gallery (API and headless browser)" scripts/test_gallery.sh

echo "test suites: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
