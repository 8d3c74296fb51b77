"""The asyncpg example against a real server: a trigger embeds photos as they are inserted; the `vector` codec
that pgvector's package registers carries embeddings both ways. Each test runs its coroutine with asyncio.run."""
import asyncio

import asyncpg
import pytest
from pgvector import Vector

import clip_photos_async as cpa
from conftest import fresh_database


@pytest.fixture(scope="module")
def database(photos):
    fresh_database("clip_asyncpg")

    async def load():
        conn = await cpa.connect(database="clip_asyncpg")
        try:
            await cpa.create_schema(conn)
            await cpa.insert_photos(conn, photos)
        finally:
            await conn.close()
    asyncio.run(load())
    return "clip_asyncpg"


def with_connection(database, work):
    async def run():
        conn = await cpa.connect(database=database)
        try:
            return await work(conn)
        finally:
            await conn.close()
    return asyncio.run(run())


def test_the_trigger_embedded_every_photo(database, photos):
    async def check(conn):
        dim = int(await conn.fetchval("SELECT clip_info()->>'embed_dim'"))
        vector = await cpa.embedding_of(conn, photos[0].name)
        assert isinstance(vector, Vector) and vector.dimensions() == dim
        assert await conn.fetchval("SELECT count(*) FROM photos WHERE embedding = clip_embed_image(image)") \
            == len(photos)
    with_connection(database, check)


def test_backfill_runs_outside_a_transaction_only(database, photos):
    name = photos[1].name

    async def check(conn):
        await conn.execute("UPDATE photos SET embedding = NULL WHERE name = $1", name)
        with pytest.raises(asyncpg.exceptions.InvalidTransactionTerminationError,
                           match="cannot run inside a transaction block"):
            async with conn.transaction():
                await cpa.backfill(conn)
        assert await conn.fetchval("SELECT embedding IS NULL FROM photos WHERE name = $1", name)
        await cpa.backfill(conn)
        assert await conn.fetchval("SELECT embedding = clip_embed_image(image) FROM photos WHERE name = $1", name)
    with_connection(database, check)


def test_text_to_image(database, photos):
    rows = with_connection(database, lambda conn: cpa.search_text(conn, "an astronaut", k=3))
    assert len(rows) == 3 and {r["name"] for r in rows} <= {p.name for p in photos}
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)


def test_image_to_image_ranks_the_photo_itself_first(database, photos):
    async def check(conn):
        for photo in photos:
            rows = await cpa.similar_photos(conn, photo.name, k=len(photos))
            assert rows[0]["name"] == photo.name and rows[0]["distance"] == pytest.approx(0, abs=1e-6)
            assert len(rows) == len(photos)
            assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)
    with_connection(database, check)


def test_a_vector_parameter_may_be_a_list(database, photos):
    """The registered codec encodes a plain list (or a numpy array) as well as a Vector."""
    async def check(conn):
        as_list = (await cpa.embedding_of(conn, photos[2].name)).to_list()
        return await conn.fetchval("SELECT name FROM photos ORDER BY embedding <=> $1 LIMIT 1", as_list)
    assert with_connection(database, check) == photos[2].name


def test_without_the_codec_vectors_are_text(database, photos):
    """What registering the codec is for: a bare asyncpg connection reads a vector as its text '[...]' and takes
    only such text for a vector parameter, not a list."""
    async def check():
        conn = await asyncpg.connect(database=database)
        try:
            text = await conn.fetchval("SELECT embedding FROM photos WHERE name = $1", photos[0].name)
            assert isinstance(text, str) and text.startswith("[")
            query = "SELECT name FROM photos ORDER BY embedding <=> $1 LIMIT 1"
            assert await conn.fetchval(query, text) == photos[0].name
            with pytest.raises(asyncpg.DataError, match="expected str, got list"):
                await conn.fetchval(query, Vector.from_text(text).to_list())
        finally:
            await conn.close()
    asyncio.run(check())
