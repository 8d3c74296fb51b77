#!/usr/bin/env bash
# The documentation as a user reads it: the SQL of the README's quick start and every SQL block of
# docs/cookbook.md run as written, in that order, in one fresh database of the private 'test' cluster, from the
# top folder of this checkout (psql's backquotes read images by their paths there). The one change: the fixture
# model's vectors have fewer dimensions than the documented model's, so vector(512) is given the fixture's.
# Then every relative link of README.md and docs/*.md must name a file that exists, and an anchor a heading of it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cluster_env test
psql_docs() { scripts/cluster.sh psql test "$@"; }

psql_docs -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS clip_docs" -c "CREATE DATABASE clip_docs"
dimension=$(psql_docs -d clip_docs -At -c "SET client_min_messages = warning" \
  -c "CREATE EXTENSION clip_search CASCADE" -c "SELECT clip_info()->>'embed_dim'" | tail -1)
script="$DEPS/docs.sql"
python3 - "$dimension" >"$script" <<'PY'
import re, sys
dimension = sys.argv[1]
def sql_blocks(text):
    return re.findall(r"^```sql\n(.*?)^```", text, re.S | re.M)
readme = open("README.md").read()
quick_start = re.search(r"^## Quick start\n(.*?)^## ", readme, re.S | re.M).group(1)
blocks = [("README.md, quick start", b) for b in sql_blocks(quick_start)]
blocks += [("docs/cookbook.md", b) for b in sql_blocks(open("docs/cookbook.md").read())]
if len(blocks) < 8:
    sys.exit(f"only {len(blocks)} SQL blocks found in the quick start and the cookbook")
for source, block in blocks:
    print(f"\\echo '--- {source}'")
    print(block.replace("vector(512)", f"vector({dimension})"))
PY
log "docs: $(grep -c '^\\echo' "$script") SQL blocks of the quick start and the cookbook, in database clip_docs"
psql_docs -d clip_docs -f "$script" >"$DEPS/docs.out" 2>&1 || { cat "$DEPS/docs.out"; die "docs: the documented SQL failed"; }
grep -q 'rocket.jpg' "$DEPS/docs.out" || die "docs: the quick start's searches returned no photo"
psql_docs -q -c "DROP DATABASE clip_docs"

python3 - <<'PY'
import pathlib, re, sys
def slug(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
def anchors(path):
    return {slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)}
broken = []
for doc in [pathlib.Path("README.md"), *sorted(pathlib.Path("docs").glob("*.md"))]:
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc.resolve()
        if not file.exists():
            broken.append(f"{doc}: {target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{doc}: {target}: no such heading")
if broken:
    sys.exit("broken links:\n" + "\n".join(broken))
PY
echo "docs: the quick start and the cookbook ran as written; every relative link resolves"
