"""Photos searched by text and by example with clip_search, from asyncio with asyncpg.

Here a trigger embeds each photo as it is inserted (clip_embed_trigger), and pgvector's Python package registers
the `vector` type on the connection, so that embeddings come back as pgvector.Vector and go in as parameters.
Connection settings come from libpq's environment variables (PGHOST, PGPORT, PGUSER, PGDATABASE).

    python clip_photos_async.py PHOTO... --text 'a cat' --like NAME
"""
import argparse
import asyncio
from pathlib import Path

import asyncpg
from pgvector import Vector
from pgvector.asyncpg import register_vector


async def connect(**kwargs) -> asyncpg.Connection:
    """A connection with the `vector` codec registered. register_vector looks the type up by name (in schema
    'public' unless told otherwise), so the extension must exist in the database first."""
    conn = await asyncpg.connect(**kwargs)
    await conn.execute("CREATE EXTENSION IF NOT EXISTS clip_search CASCADE")
    await register_vector(conn)
    return conn


async def create_schema(conn: asyncpg.Connection) -> None:
    """The table with a vector column of the model's dimension, its HNSW index and the embedding trigger."""
    dim = int(await conn.fetchval("SELECT clip_info()->>'embed_dim'"))
    async with conn.transaction():
        # DDL takes no parameters: the dimension, an int from the server, goes in as a literal.
        await conn.execute(f"""CREATE TABLE IF NOT EXISTS photos (
            id        bigserial PRIMARY KEY,
            name      text NOT NULL UNIQUE,
            image     bytea NOT NULL,
            embedding vector({dim:d}))""")
        await conn.execute("CREATE INDEX IF NOT EXISTS photos_embedding_hnsw ON photos "
                           "USING hnsw (embedding vector_cosine_ops)")
        # CREATE OR REPLACE TRIGGER needs PostgreSQL 14; this works on 13 too.
        await conn.execute("DROP TRIGGER IF EXISTS photos_embed ON photos")
        await conn.execute("CREATE TRIGGER photos_embed BEFORE INSERT OR UPDATE OF image ON photos "
                           "FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('image', 'embedding')")


async def insert_photos(conn: asyncpg.Connection, paths) -> None:
    """Inserts each file as a bytea parameter (bytes), named by its file name; the trigger embeds it."""
    await conn.executemany("INSERT INTO photos (name, image) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                           [(Path(p).name, Path(p).read_bytes()) for p in paths])


async def backfill(conn: asyncpg.Connection, batch_size: int = 64) -> None:
    """Embeds the rows whose embedding is NULL (rows from before the trigger, say). clip_backfill COMMITs after
    each batch: asyncpg runs each statement on its own, which is what it needs; inside `async with
    conn.transaction()` it refuses to start (SQLSTATE 2D000)."""
    await conn.execute("CALL clip_backfill($1::regclass, $2::text, $3::text, $4)",
                       "photos", "image", "embedding", batch_size)


async def search_text(conn: asyncpg.Connection, query: str, k: int = 5) -> list[asyncpg.Record]:
    """Text to image: records (name, distance), closest first."""
    return await conn.fetch("""SELECT name, embedding <=> clip_embed_text($1) AS distance FROM photos
                               ORDER BY embedding <=> clip_embed_text($1) LIMIT $2""", query, k)


async def embedding_of(conn: asyncpg.Connection, name: str) -> Vector:
    """The stored embedding of the photo called NAME, decoded by the registered codec."""
    vector = await conn.fetchval("SELECT embedding FROM photos WHERE name = $1", name)
    if vector is None:
        raise LookupError(f"no embedded photo is called {name!r}")
    return vector


async def similar_photos(conn: asyncpg.Connection, name: str, k: int = 5) -> list[asyncpg.Record]:
    """Image to image: the photos closest to the photo called NAME, itself first. The vector travels to the
    client and back as a parameter (any Vector, list or numpy array of the right dimension would do)."""
    query_vector = await embedding_of(conn, name)
    return await conn.fetch("""SELECT name, embedding <=> $1 AS distance FROM photos
                               ORDER BY embedding <=> $1 LIMIT $2""", query_vector, k)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="*")
    parser.add_argument("--text")
    parser.add_argument("--like")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    conn = await connect()
    try:
        await create_schema(conn)
        await insert_photos(conn, args.photos)
        for title, rows in (("text", args.text and await search_text(conn, args.text, args.k)),
                            ("like", args.like and await similar_photos(conn, args.like, args.k))):
            for row in rows or []:
                print(f"{title}: {row['distance']:.4f}  {row['name']}")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
