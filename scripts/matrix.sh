#!/usr/bin/env bash
# Every test suite on several PostgreSQL majors, one after the other: scripts/test.sh with PG_MAJOR set. Each major's
# server comes from apt where apt has it (Debian 12: 15), else from a Debian or Ubuntu source package, built once into
# .deps (build_postgres_from_source in scripts/lib.sh: 13, 14, 16, 17 and 18). Each major keeps its own private
# installations and clusters. Prints a Markdown table for the README's support table; each major's full output is in
# .deps/matrix-pgNN.log.
#   scripts/matrix.sh            the default major, then 18
#   scripts/matrix.sh 18 13      those majors
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

majors=("$@")
((${#majors[@]})) || majors=("$DEFAULT_PG_MAJOR" 18)
rows=()
for major in "${majors[@]}"; do
  out="$DEPS/matrix-pg$major.log"
  log "matrix: PostgreSQL $major (output in $out)"
  started=$(date +%s)
  PG_MAJOR=$major scripts/test.sh >"$out" 2>&1
  minutes=$(( ($(date +%s) - started + 30) / 60 ))
  summary=$(grep -ao 'test suites: [0-9]* passed, [0-9]* failed, [0-9]* skipped' "$out" | tail -1)
  summary=${summary:-"test suites: none, the run stopped: $(grep -a 'error:' "$out" | tail -1 | sed 's/.*error: //')"}
  config=/usr/lib/postgresql/$major/bin/pg_config server="Debian package"
  [[ -x $config ]] || { config=$(source_pg_config "$major"); server="built from source"; }
  failed=$(grep -a '^failed: ' "$out" | sed 's/^failed: //' | paste -sd ';' -)
  skipped=$(grep -a '^skipped: ' "$out" | sed 's/^skipped: //' | paste -sd ';' -)
  rows+=("| $major | $("$config" --version 2>/dev/null || echo none) | $server | ${summary#test suites: } |\
 ${failed:-none} | ${skipped:-none} | $minutes |")
done
echo
echo "scripts/matrix.sh ${majors[*]}, $(date -u '+%Y-%m-%d %H:%M UTC'):"
echo
echo "| major | server | from | suites | failed | skipped | minutes |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
