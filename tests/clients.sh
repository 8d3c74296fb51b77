#!/usr/bin/env bash
# The client examples, each a small program and its tests, against the private 'test' cluster that scripts/test.sh
# sets up (the tiny fixture model, dimension 32), each in a database of its own:
#   python  examples/python: psycopg 3 and asyncpg (pytest)
#   node    examples/node:   node-postgres with pgvector's type registration (npm ci, node --test)
#   django  examples/django: a model with pgvector's VectorField, searched with CosineDistance (manage.py test)
#   jdbc    examples/jdbc:   Debian's PostgreSQL JDBC driver, javac and java (no build tool)
# tests/clients.sh [CLIENT...] runs those named (all four by default), installing what each needs first, and ends
# with a count of those that passed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cluster_env test

python_client() {
  local venv
  venv=$(python_env venv-example-python examples/python/requirements.txt psycopg asyncpg pgvector pytest) || return
  (cd examples/python && "$venv/bin/python" -m pytest -q -p no:cacheprovider)
}

node_client() {
  (cd examples/node && npm ci --prefer-offline --no-audit --no-fund --loglevel=error && node --test)
}

django_client() {
  local venv
  venv=$(python_env venv-example-django examples/django/requirements.txt django psycopg pgvector) || return
  (cd examples/django && "$venv/bin/python" manage.py test --noinput)
}

# apt-get install, waiting for another apt or dpkg to finish; the package lists are updated when that fails.
apt_install() {
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$@")
  $SUDO "${install[@]}" >/dev/null && return
  $SUDO apt-get update -qq -o DPkg::Lock::Timeout=300 && $SUDO "${install[@]}" >/dev/null
}

# Debian's driver (/usr/share/java/postgresql.jar) and a JDK, installed when missing.
jdbc_client() {
  local jar=/usr/share/java/postgresql.jar packages=() classes="$ROOT/target/jdbc-example"
  [[ -f $jar ]] || packages+=(libpostgresql-jdbc-java)
  command -v javac >/dev/null || packages+=(openjdk-17-jdk-headless)
  if ((${#packages[@]})); then
    log "installing Debian packages: ${packages[*]}"
    apt_install "${packages[@]}" || return
  fi
  rm -rf "$classes" && mkdir -p "$classes"
  javac -Xlint:all -Werror -cp "$jar" -d "$classes" examples/jdbc/*.java \
    && (cd examples/jdbc && java -cp "$classes:$jar" ClipPhotosTest)
}

clients=("$@")
((${#clients[@]})) || clients=(python node django jdbc)
passed=0 failed=0
for client in "${clients[@]}"; do
  declare -F "${client}_client" >/dev/null || die "unknown client $client (python, node, django or jdbc)"
  log "client example: $client"
  start=$SECONDS
  if "${client}_client"; then
    passed=$((passed + 1)); log "client example $client passed ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); log "client example $client FAILED ($((SECONDS - start)) s)"
  fi
done
echo "clients: $passed passed, $failed failed"
((failed == 0))
