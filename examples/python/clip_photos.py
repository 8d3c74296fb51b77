"""Photos searched by text and by example with clip_search, from Python with psycopg 3.

The database does all the work: rows are inserted with their image as bytea, `CALL clip_backfill` embeds them,
and searches are ORDER BY embedding <=> ... queries. Connection settings come from libpq's environment (PGHOST,
PGPORT, PGUSER, PGDATABASE) or a conninfo string.

    python clip_photos.py load PHOTO...        insert the files (named by their file name) and embed them
    python clip_photos.py text 'a cat' [-k 5]  photos closest to a text
    python clip_photos.py like NAME [-k 5]     photos closest to the photo called NAME (itself first)
"""
import argparse
import sys
from pathlib import Path

import psycopg
from psycopg import sql


def embedding_dimension(conn: psycopg.Connection) -> int:
    """The dimension of the vectors the server's model makes (32 for the test model, 512 for ViT-B-32)."""
    return int(conn.execute("SELECT clip_info()->>'embed_dim'").fetchone()[0])


def create_schema(conn: psycopg.Connection) -> None:
    """The extension (CASCADE brings pgvector's `vector` type), the table and its HNSW index."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS clip_search CASCADE")
    # DDL takes no parameters: the dimension goes in as a literal.
    conn.execute(sql.SQL("""CREATE TABLE IF NOT EXISTS photos (
        id        bigserial PRIMARY KEY,
        name      text NOT NULL UNIQUE,
        image     bytea NOT NULL,
        embedding vector({dim}))""").format(dim=sql.Literal(embedding_dimension(conn))))
    conn.execute("CREATE INDEX IF NOT EXISTS photos_embedding_hnsw ON photos USING hnsw (embedding vector_cosine_ops)")
    conn.commit()


def insert_photos(conn: psycopg.Connection, paths) -> int:
    """Inserts each file as a bytea parameter (bytes), named by its file name; returns how many were new."""
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO photos (name, image) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                        [(Path(p).name, Path(p).read_bytes()) for p in paths])
        inserted = cur.rowcount
    conn.commit()
    return inserted


def backfill(conninfo: str = "", batch_size: int = 64, progress=None) -> None:
    """Embeds every photo whose embedding is NULL. clip_backfill is a procedure that COMMITs after each batch, so
    it must run outside a transaction block: on a connection with autocommit=True (psycopg's default opens a
    transaction before the first statement, and the procedure's COMMIT then fails with 'invalid transaction
    termination'). PROGRESS, when given, receives the procedure's NOTICEs."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if progress:
            conn.add_notice_handler(lambda notice: progress(notice.message_primary))
        conn.execute("CALL clip_backfill(%s::regclass, %s::text, %s::text, %s)",
                     ("photos", "image", "embedding", batch_size))


TEXT_SEARCH = """SELECT name, embedding <=> clip_embed_text(%(query)s) AS distance FROM photos
                 ORDER BY embedding <=> clip_embed_text(%(query)s) LIMIT %(k)s"""
# The query vector is a scalar subquery, so the HNSW index serves the ORDER BY (a join would not).
PHOTO_SEARCH = """SELECT name, embedding <=> (SELECT embedding FROM photos WHERE name = %(name)s) AS distance
                  FROM photos ORDER BY embedding <=> (SELECT embedding FROM photos WHERE name = %(name)s)
                  LIMIT %(k)s"""


def search_text(conn: psycopg.Connection, query: str, k: int = 5) -> list[tuple[str, float]]:
    """Text to image: (name, cosine distance), closest first."""
    return conn.execute(TEXT_SEARCH, {"query": query, "k": k}).fetchall()


def similar_photos(conn: psycopg.Connection, name: str, k: int = 5) -> list[tuple[str, float]]:
    """Image to image: the photos closest to the photo called NAME, that photo itself first (distance 0)."""
    rows = conn.execute(PHOTO_SEARCH, {"name": name, "k": k}).fetchall()
    if rows and rows[0][1] is None:
        raise LookupError(f"no embedded photo is called {name!r}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conninfo", default="", help="libpq connection string (default: the PG* variables)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("load").add_argument("photos", nargs="+")
    for name, what in (("text", "query"), ("like", "name")):
        command = commands.add_parser(name)
        command.add_argument(what)
        command.add_argument("-k", type=int, default=5)
    args = parser.parse_args(argv)
    with psycopg.connect(args.conninfo) as conn:
        if args.command == "load":
            create_schema(conn)
            print(f"{insert_photos(conn, args.photos)} photos inserted")
            backfill(args.conninfo, progress=print)
            return 0
        rows = search_text(conn, args.query, args.k) if args.command == "text" else similar_photos(conn, args.name, args.k)
    for name, distance in rows:
        print(f"{distance:.4f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
