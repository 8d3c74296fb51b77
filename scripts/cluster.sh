#!/usr/bin/env bash
# A private PostgreSQL cluster owned by the project, on a spare port, for the demo and the SQL tests.
#   scripts/cluster.sh start [NAME]     initialise (first time) and start; prints nothing else
#   scripts/cluster.sh stop [NAME]
#   scripts/cluster.sh psql [NAME] ...  psql connected to it as the superuser
# NAME picks the cluster (default "demo"); each has its own data directory, port and socket folder.
# The server runs as the 'postgres' user when this script runs as root (initdb refuses root).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cmd=${1:?usage: cluster.sh start|stop|psql [NAME] [psql args]}
name=${2:-demo}
shift $(( $# >= 2 ? 2 : $# ))
cluster_env "$name"

case "$cmd" in
  start)
    mkdir -p "$PGDATA" "$PGSOCKET"
    [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$PGDATA" "$PGSOCKET"
    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
      as_owner "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
      cat >>"$PGDATA/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = 'localhost'
unix_socket_directories = '$PGSOCKET'
shared_buffers = 128MB
CONF
    fi
    if ! as_owner "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
      # Without RUST_BACKTRACE from a developer's shell: pgrx would append Rust backtraces to SQL errors.
      as_owner env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 start >/dev/null \
        || { tail -20 "$PGDATA/server.log" >&2; die "cluster $name did not start"; }
    fi
    ;;
  stop)
    if [[ -f "$PGDATA/PG_VERSION" ]]; then
      as_owner "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  psql)
    exec "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"
    ;;
  *) die "unknown command $cmd" ;;
esac
