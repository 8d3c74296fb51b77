#!/usr/bin/env bash
# Reinstalling the extension while servers run from the installation. From the private PostgreSQL installation
# 'suites' (use_private_postgres in scripts/lib.sh, where scripts/test.sh installs the package) it starts two clusters:
# 'concurrent', with the background worker preloaded (shared_preload_libraries = 'clip_search': the postmaster and
# every process it forks have the library mapped) and a watched table, and 'concurrent-gallery', without it, where
# the gallery server (gallery/, its debug build) runs and each new backend loads the library when it first calls it.
# It keeps both busy: sessions, each a new connection, insert texts (embedded by the worker) and images (embedded in
# the INSERT) into the first, and embed a text in a new backend of the second; a client sends the gallery searches,
# texts and images to store, and stats requests. Meanwhile it installs the extension into that installation again,
# several times, as the test run and users install it: with dpkg (the package, as scripts/test.sh installs it; dpkg
# renames each file into place) and with scripts/install.sh (a release build; install_atomically renames a complete
# copy over each file). Before each install it waits, bounded, until every kind of load has moved on. Then: no SQL error,
# every HTTP request answered with its success status (200, or 201 for a store), no server process ended by a
# signal and no crash recovery in either server's log, the worker the same process as before the installs, every
# row embedded. Every wait is a bounded poll; nothing is timed.
#
# An install that writes over the installed library in place (cp, or cargo pgrx install) fails this test. Truncating
# the file drops its pages from every process that maps it (here the postmaster, the worker and the backends of both
# clusters); one that runs or reads the library's code before the new bytes are all written is killed by SIGBUS or
# SIGSEGV, and the postmaster then ends every backend and recovers (the log lines checked below, and failed queries);
# a backend that loads the library meanwhile reads a partial file ("unrecognized function API version", a failed
# query, an HTTP 500). Tried by hand, with both installs of each round replaced by `cp` of the same release build over
# clip_search.so: at the first copy a process of each cluster was "terminated by signal 7: Bus error", a backend
# failed with 'could not load library ".../clip_search.so": file too short', both clusters went into recovery, the
# gallery answered 500 and 503, and the worker's cluster shut down ("shutting down due to startup process failure").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
rounds=${CLIP_CONCURRENT_ROUNDS:-3}  # each round: one install with dpkg, one with scripts/install.sh
db=clip_concurrent
out="$ROOT/target/concurrent_install"
rm -rf "$out" && mkdir -p "$out"

if [[ -z $PG_ROOT ]]; then
  scripts/setup.sh
  use_private_postgres suites
fi
log "concurrent: building the packages and the gallery server"
debs=$(scripts/package.sh)
cargo build -p clip-gallery --quiet
gallery_bin="$ROOT/target/debug/clip-gallery"
private_dpkg --install $debs

worker() { (cluster_env concurrent && "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"); }
gallery_db() { (cluster_env concurrent-gallery && "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d gallery "$@"); }
server_pid="" loads=()
cleanup() {
  touch "$out/stop"
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
  wait "${loads[@]}" $server_pid 2>/dev/null || true
  scripts/cluster.sh stop concurrent
  scripts/cluster.sh stop concurrent-gallery
}
trap cleanup EXIT

log "concurrent: the worker's cluster (shared_preload_libraries) and the gallery's"
start_preloaded_cluster concurrent "$db" "clip.worker_naptime = 100"
worker >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION clip_search CASCADE;
CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL, embedding vector(32));
SELECT clip_watch('notes', 'body', 'embedding');
CREATE TABLE photos (id bigserial PRIMARY KEY, image bytea NOT NULL, embedding vector(32) NOT NULL);
SQL
(
  cluster_env concurrent-gallery
  scripts/cluster.sh stop concurrent-gallery
  rm -rf "$PGDATA"
  scripts/cluster.sh start concurrent-gallery
  scripts/cluster.sh psql concurrent-gallery -c "LOAD 'clip_search'" \
    -c "ALTER SYSTEM SET clip.model_dir = '$ROOT/tests/fixtures/tiny-model'" -c "SELECT pg_reload_conf()" \
    -c "CREATE DATABASE gallery" >/dev/null
  "$gallery_bin" --setup --database "host=$PGSOCKET port=$PGPORT user=postgres dbname=gallery" --role clip_gallery \
    >"$out/setup.out" 2>&1 || { cat "$out/setup.out" >&2; die "concurrent: the gallery set-up failed"; }
  exec "$gallery_bin" --listen 127.0.0.1:0 --quiet \
    --database "host=$PGSOCKET port=$PGPORT user=clip_gallery dbname=gallery" >"$out/server.out" 2>"$out/server.log"
) &
server_pid=$!
listening() { grep -q '^clip-gallery: listening on ' "$out/server.out" 2>/dev/null || ! kill -0 "$server_pid"; }
wait_until 120 listening
url=$(sed -n 's/^clip-gallery: listening on //p' "$out/server.out")
[[ -n $url ]] || { cat "$out/server.log" >&2; die "concurrent: the gallery server did not start"; }
worker_running() { (cluster_env concurrent && sql_is_true "$db" \
  "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'clip_search worker')"); }
wait_until 60 worker_running || die "concurrent: no worker running"
worker_pid=$(worker -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'clip_search worker'")
log "concurrent: gallery on $url, worker pid $worker_pid"

# The load: three loops until $out/stop exists. Each records a line per piece of work done in its own file
# ($out/<name>.done), and each SQL error or unexpected HTTP status in $out/<name>.errors.
images=(chelsea_rgb_200x133.png coffee_lossy_300x200.webp camera_l_128x128.gif rocket_rgb_progressive_640x427.jpg)
inserts() {
  local i=0 image
  while [[ ! -e $out/stop ]]; do
    i=$((i + 1)) image=${images[i % ${#images[@]}]}
    if worker >/dev/null 2>>"$out/inserts.errors" <<SQL
INSERT INTO notes (body) VALUES ('note number $i about topic $((i % 37))');
INSERT INTO photos (image, embedding)
SELECT b, clip_embed_image(b) FROM pg_read_binary_file('$ROOT/tests/fixtures/images/$image') AS f(b);
SQL
    then echo "$i" >>"$out/inserts.done"; fi
  done
}
new_backends() {
  local i=0
  while [[ ! -e $out/stop ]]; do
    i=$((i + 1))
    [[ "$(gallery_db -c "SELECT vector_dims(clip_embed_text('a new backend number $i'))" 2>>"$out/new_backends.errors")" == 32 ]] \
      && echo "$i" >>"$out/new_backends.done"
  done
}
http() {  # METHOD PATH EXPECTED-STATUS [curl arguments]
  local method=$1 path=$2 expected=$3 status
  shift 3
  status=$(curl -s -o "$out/http.body" -w '%{http_code}' --max-time 120 -X "$method" "$@" "$url$path") || true
  if [[ $status == "$expected" ]]; then echo "$status $method $path" >>"$out/http.done"
  else echo "$status (expected $expected) $method $path: $(head -c 300 "$out/http.body" 2>/dev/null)" >>"$out/http.errors"; fi
}
requests() {
  local i=0
  while [[ ! -e $out/stop ]]; do
    i=$((i + 1))
    http GET "/api/search?q=a+photo+of+a+cat+$i&k=5" 200
    http POST /api/texts 201 -H 'content-type: application/json' --data "{\"texts\": [\"a stored text number $i\"]}"
    http POST /api/images 201 -F "images=@$ROOT/tests/fixtures/images/${images[i % ${#images[@]}]}"
    http GET /api/stats 200
  done
}
: >"$out/inserts.done" && : >"$out/new_backends.done" && : >"$out/http.done"
inserts & loads+=($!)
new_backends & loads+=($!)
requests & loads+=($!)

# Waits until each loop has done at least 3 more pieces of work than when it was called (bounded: 120 s); fails when
# the load stalled.
done_counts() { wc -l <"$out/inserts.done"; wc -l <"$out/new_backends.done"; wc -l <"$out/http.done"; }
load_moved_on() {
  local now
  mapfile -t now < <(done_counts)
  ((now[0] >= before[0] + 3 && now[1] >= before[1] + 3 && now[2] >= before[2] + 3))
}
wait_for_load() {
  local before
  mapfile -t before < <(done_counts)
  wait_until 120 load_moved_on
}

installs=0 stalled=0
for ((round = 1; round <= rounds; round++)); do
  wait_for_load || { stalled=1; break; }
  log "concurrent: round $round of $rounds: dpkg --install of the packages"
  private_dpkg --install $debs
  wait_for_load || { stalled=1; break; }
  log "concurrent: round $round of $rounds: scripts/install.sh"
  scripts/install.sh
  installs=$((installs + 2))
done
((stalled)) || wait_for_load || stalled=1
touch "$out/stop"
wait "${loads[@]}"
loads=()

failed=0
fail() { log "concurrent: FAIL: $*"; failed=1; }
((stalled == 0)) || fail "the load stalled (no progress in 120 s)"
for name in inserts new_backends http; do
  if [[ -s $out/$name.errors ]]; then
    head -5 "$out/$name.errors" >&2
    fail "$(wc -l <"$out/$name.errors") lines of errors from the $name loop"
  fi
done
kill -0 "$server_pid" 2>/dev/null || fail "the gallery server exited"
crashes='terminated by signal|server process .* was terminated|database system was interrupted|terminating any other active server processes|unrecognized function API version|could not load library'
for name in concurrent concurrent-gallery; do
  logfile="$(cluster_env "$name" && echo "$PGDATA")/server.log"
  if grep -E "$crashes" "$logfile" >&2; then fail "cluster $name: a server process crashed (see $logfile)"; fi
done
((failed == 0)) || exit 1
[[ "$(worker -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'clip_search worker'")" == "$worker_pid" ]] \
  || fail "the worker is not the process it was before the installs ($worker_pid)"
all_embedded() { sql_is_true "$db" "SELECT rows_pending = 0 FROM clip_watch_status WHERE relation = 'notes'::regclass"; }
( cluster_env concurrent && wait_until 120 all_embedded ) || fail "the worker left rows of notes without an embedding"
counts=$(worker -F ' ' -c "SELECT (SELECT count(*) FROM notes), (SELECT count(embedding) FROM notes), (SELECT count(*) FROM photos)")
read -r notes embedded photos <<<"$counts"
((notes > 0 && embedded == notes)) || fail "$embedded of $notes notes embedded"
((failed == 0)) || exit 1
log "concurrent: $installs installs under load: $notes notes embedded by the worker (pid $worker_pid throughout)," \
  "$photos images embedded in their INSERT, $(wc -l <"$out/new_backends.done") new backends of the gallery's cluster," \
  "$(wc -l <"$out/http.done") HTTP requests, all answered 200 or 201; no SQL error, no crash in the server logs"
