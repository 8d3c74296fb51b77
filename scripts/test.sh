#!/usr/bin/env bash
# Runs every test suite of clip_search, installing what is missing first (scripts/setup.sh). Safe to run twice.
#   1. the model core and the model fetcher, pure Rust: cargo test -p clip_core -p clip_fetch
#   2. the extension inside PostgreSQL:       cargo pgrx test (#[pg_test]s, a throwaway cluster)
#   3. SQL regression tests with expected output (tests/pg_regress), on the private 'test' cluster
#   4. the client examples' tests, against the same cluster: SQLAlchemy (examples/sqlalchemy), then psycopg 3 and
#      asyncpg, node-postgres, Django and JDBC (tests/clients.sh: examples/python, node, django, jdbc)
#   5. the documentation: the README's quick start and docs/cookbook.md run as written, and every relative link
#      resolves (tests/docs.sh), on the same cluster
#   6. crash recovery: an immediate shutdown during inserts (tests/crash_recovery.sh)
#   7. the gallery: its HTTP API and a headless-Chromium test of its page (scripts/test_gallery.sh)
#   8. clip-fetch against a hub emulator, and its models' embeddings in SQL against open_clip's (tests/fetch.sh)
#   9. the main job, scripts/gallery.sh: the recommended model from a hub emulator, and the loud fallback to random
#      weights without a hub (tests/gallery_main.sh)
#  10. the Debian package (tests/package_install.sh), run before 3: suites 3 to 9 then run on the installed package
#  11. scaling out, each on its own clusters: a hot standby (tests/scale_replica.sh) and shards (tests/scale_sharding.sh)
#  12. int8 models on an emulated AVX2 CPU without VNNI (tests/int8_avx2.sh, qemu-user)
#  13. the background worker that keeps watched columns embedded, on its own cluster (tests/watch.sh)
#      and a migration to another model under load, with a crash in the middle (tests/migrate.sh)
#  14. reinstalling under running servers, the worker's and the gallery's (tests/concurrent_install.sh)
#  15. the system's PostgreSQL installation is byte for byte what it was before the run
# Everything the suites install goes into private copies of the system's PostgreSQL installation (use_private_postgres
# in scripts/lib.sh), and every cluster they start runs from one: .deps/pgroot/pgrx-test for cargo pgrx test (which
# copies its debug build over the installed library, in place), .deps/pgroot/suites for the package and the SQL-level
# suites. The system's installation, and the clusters that run from it (the gallery's 'demo'), are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=2
# CI builds once from a fresh checkout: incremental caches would only take disk.
[[ -z ${CI:-} ]] || export CARGO_INCREMENTAL=0

# Megabytes free on the disk that holds the checkout, its builds and its clusters.
free_mb() { df -Pm "$ROOT" | awk 'NR == 2 { print $4 }'; }
log "disk: $(free_mb) MB free; a run from a fresh checkout writes about 6 GB there (builds, installations, clusters)"

scripts/setup.sh
# The server reads the fixture model and images from this checkout as the 'postgres' user.
if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -r "$ROOT/tests/fixtures/tiny-model/manifest.json"; then
  die "the 'postgres' user cannot read $ROOT/tests/fixtures: clone into a folder that others can read"
fi
# Clusters that an aborted run left running from the private installations: stopped before anything is installed.
use_private_postgres pgrx-test && stop_clusters_running_from "$PG_ROOT"
use_private_postgres suites && stop_clusters_running_from "$PG_ROOT"

# The system installation's files (bin, lib and share, with their sha256) and the state of its PostgreSQL packages:
# the last suite requires them unchanged.
system_installation() {
  local option
  for option in --bindir --pkglibdir --sharedir; do
    find "$("$SYSTEM_PG_CONFIG" "$option")" \( -type f -o -type l \) -print0 | sort -z | xargs -0 sha256sum
  done
  dpkg-query -W -f '${Package} ${Version} ${Status}\n' "postgresql-$PG_MAJOR*" 2>/dev/null || true
}
system_before=$(system_installation)
system_unchanged() {
  diff <(echo "$system_before") <(system_installation) >&2 \
    || { log "the run changed the system's PostgreSQL installation ($("$SYSTEM_PG_CONFIG" --bindir)/..)"; return 1; }
  echo "the system's PostgreSQL installation is unchanged: $(wc -l <<<"$system_before") files and packages"
}

passed=0 failed=() skipped=()
suite() {
  local name=$1; shift
  local started=$SECONDS
  log "suite: $name"
  if "$@"; then
    passed=$((passed + 1))
    log "suite passed in $((SECONDS - started)) s: $name"
  else
    failed+=("$name")
    log "suite FAILED after $((SECONDS - started)) s: $name"
    (($(free_mb) >= 1024)) || log "the disk is full or nearly ($(free_mb) MB free): the suite may have failed for that"
  fi
}
# A suite that cannot run on this major: NAME, then why.
skip_suite() {
  log "suite SKIPPED: $1: $2"
  skipped+=("$1: $2")
}

# cargo pgrx test on the private installation 'pgrx-test': pgrx builds for, installs into and starts its test
# cluster from the pg_config of its configuration.
pgrx_tests() (
  use_private_postgres pgrx-test
  use_pgrx_home pgrx-home "$PG_CONFIG"
  local data="$DEPS/pgrx-test-data$MAJOR_SUFFIX"
  mkdir -p "$data"
  local runas=()
  if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$data"; runas=(--runas postgres); fi
  install_onnxruntime
  cargo pgrx test "pg$PG_MAJOR" "${runas[@]}" --pgdata "$data"
)

# The private 'test' cluster with the tiny fixture model, shared by the SQL-level suites.
test_cluster() {
  # The Debian packages (a release build), installed with dpkg into the private installation: what users install is
  # what gets tested.
  local debs
  debs=$(scripts/package.sh)
  private_dpkg --install $debs
  # The earlier releases' install scripts, for the upgrade test.
  install -m 0644 tests/upgrade/clip_search--*.sql "$(pg_sharedir)/extension/"
  cluster_env test
  scripts/cluster.sh stop test
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
  # The tests find their fixtures through these; pg_regress sets them itself only from PostgreSQL 15 on.
  export PG_ABS_SRCDIR="$ROOT/tests/pg_regress" PG_ABS_BUILDDIR="$out"
  local status=0
  "$(pg_pkglibdir)/pgxs/src/test/regress/pg_regress" --host="$PGSOCKET" \
    --port="$PGPORT" --user=postgres --dbname=clip_regress --inputdir=tests/pg_regress --outputdir="$out" \
    --bindir="$PG_BIN" $tests || status=$?
  [[ -f "$out/regression.diffs" ]] && head -200 "$out/regression.diffs"
  return $status
}

orm_example() {
  local venv
  venv=$(python_env venv-examples examples/sqlalchemy/requirements.txt sqlalchemy pgvector psycopg pytest) || return
  (cd examples/sqlalchemy && "$venv/bin/python" -m pytest -q -p no:cacheprovider)
}

suite "model core and fetcher (cargo test -p clip_core -p clip_fetch)" cargo test -p clip_core -p clip_fetch
suite "int8 on emulated AVX2 (qemu -cpu Haswell)" tests/int8_avx2.sh
suite "extension (cargo pgrx test)" pgrx_tests
suite "Debian package (dpkg --install into a private installation, CREATE EXTENSION, dpkg --remove)" tests/package_install.sh
trap 'scripts/cluster.sh stop test' EXIT
test_cluster
suite "SQL regression (pg_regress)" sql_regression
suite "SQLAlchemy example (pytest)" orm_example
suite "Python clients: psycopg 3 and asyncpg (examples/python, pytest)" tests/clients.sh python
suite "Node.js client: node-postgres and pgvector (examples/node, npm ci, node --test)" tests/clients.sh node
if ((PG_MAJOR >= 14)); then
  suite "Django client: VectorField, CosineDistance, migrations (examples/django, manage.py test)" tests/clients.sh django
else
  skip_suite "Django client" "Django 5.2 supports PostgreSQL 14 and later"
fi
suite "Java client: the PostgreSQL JDBC driver (examples/jdbc, javac, java)" tests/clients.sh jdbc
suite "the documentation's SQL and links (tests/docs.sh)" tests/docs.sh
suite "crash recovery (immediate shutdown during inserts)" tests/crash_recovery.sh
suite "clip-fetch against a hub emulator, and its models in SQL (tests/fetch.sh)" tests/fetch.sh
suite "background worker (clip_watch, shared_preload_libraries)" tests/watch.sh
suite "migration to another model under load and a crash (clip_migrate, tests/migrate.sh)" tests/migrate.sh
suite "scaling out: hot standby (pg_basebackup, streaming replication)" tests/scale_replica.sh
suite "scaling out: shards (partitioning, postgres_fdw)" tests/scale_sharding.sh
suite "gallery (API and headless browser)" scripts/test_gallery.sh
suite "the main job (scripts/gallery.sh: the recommended model from a hub emulator, the fallback without one)" \
  tests/gallery_main.sh
suite "reinstalling under the worker and the gallery (tests/concurrent_install.sh)" tests/concurrent_install.sh
suite "the system's PostgreSQL installation is unchanged" system_unchanged

log "disk: builds $(du -sh target | cut -f1), installations and clusters $(du -sh "$DEPS" | cut -f1)," \
  "$(free_mb) MB free"
echo "test suites: $passed passed, ${#failed[@]} failed, ${#skipped[@]} skipped (PostgreSQL $PG_MAJOR, $SECONDS s)"
((${#failed[@]} == 0)) || printf 'failed: %s\n' "${failed[@]}"
((${#skipped[@]} == 0)) || printf 'skipped: %s\n' "${skipped[@]}"
((${#failed[@]} == 0))
