"""The psycopg example against a real server: photos inserted as bytea, embedded by CALL clip_backfill on an
autocommit connection, found by text and by name."""
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pgvector import Vector
from pgvector.psycopg import register_vector

import clip_photos
from conftest import fresh_database


@pytest.fixture(scope="module")
def conninfo(photos):
    conninfo = fresh_database("clip_psycopg")
    with psycopg.connect(conninfo) as conn:
        clip_photos.create_schema(conn)
        assert clip_photos.insert_photos(conn, photos) == len(photos)
    return conninfo


@pytest.fixture(scope="module")
def backfilled(conninfo):
    clip_photos.backfill(conninfo)
    return conninfo


def test_the_column_has_the_models_dimension(conninfo):
    with psycopg.connect(conninfo) as conn:
        dim = clip_photos.embedding_dimension(conn)
        column = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                              "WHERE attrelid = 'photos'::regclass AND attname = 'embedding'").fetchone()[0]
        assert column == f"vector({dim})"


def test_backfill_inside_a_transaction_block_fails(conninfo, photos):
    """Without autocommit psycopg opens a transaction first, and the procedure refuses to start: the doc's
    warning. The refused call leaves nothing behind."""
    with psycopg.connect(conninfo) as conn:
        assert not conn.autocommit
        conn.execute("UPDATE photos SET embedding = NULL WHERE name = %s", (photos[0].name,))
        with pytest.raises(psycopg.errors.InvalidTransactionTermination, match="cannot run inside a transaction block"):
            conn.execute("CALL clip_backfill(%s::regclass, %s::text, %s::text)", ("photos", "image", "embedding"))
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM photos WHERE embedding IS NULL "
                            "AND name = %s", (photos[0].name,)).fetchone()[0] == 1


def test_backfill_with_autocommit_embeds_every_photo(conninfo, photos):
    notices = []
    clip_photos.backfill(conninfo, batch_size=2, progress=notices.append)
    assert f"clip_backfill: {len(photos)} of {len(photos)} rows embedded" in notices, notices
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT count(*), count(*) FILTER (WHERE embedding = clip_embed_image(image)) "
                            "FROM photos").fetchone() == (len(photos), len(photos))


def test_text_to_image(backfilled, photos):
    with psycopg.connect(backfilled) as conn:
        rows = clip_photos.search_text(conn, "a photo of the moon", k=4)
    assert len(rows) == 4
    assert {name for name, _ in rows} <= {p.name for p in photos}
    distances = [distance for _, distance in rows]
    assert distances == sorted(distances) and all(0 <= d <= 2 for d in distances)


def test_image_to_image_ranks_the_photo_itself_first(backfilled, photos):
    with psycopg.connect(backfilled) as conn:
        for photo in photos:
            rows = clip_photos.similar_photos(conn, photo.name, k=len(photos))
            assert rows[0][0] == photo.name and rows[0][1] == pytest.approx(0, abs=1e-6)
            assert sorted(name for name, _ in rows) == sorted(p.name for p in photos)
            assert [d for _, d in rows] == sorted(d for _, d in rows)


def test_both_searches_use_the_hnsw_index(backfilled, photos):
    with psycopg.connect(backfilled) as conn:
        conn.execute("SET enable_seqscan = off")
        for query, params in ((clip_photos.TEXT_SEARCH, {"query": "a cat", "k": 3}),
                              (clip_photos.PHOTO_SEARCH, {"name": photos[0].name, "k": 3})):
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN (COSTS OFF) " + query, params))
            assert "Index Scan using photos_embedding_hnsw" in plan, plan


def test_vectors_read_as_text_unless_the_type_is_registered(backfilled, photos):
    query = "SELECT embedding FROM photos WHERE name = %s"
    with psycopg.connect(backfilled) as conn:
        dim = clip_photos.embedding_dimension(conn)
        text = conn.execute(query, (photos[0].name,)).fetchone()[0]
        assert isinstance(text, str) and text.startswith("[") and len(text.split(",")) == dim
        register_vector(conn)
        vector = conn.execute(query, (photos[0].name,)).fetchone()[0]
        assert isinstance(vector, Vector) and vector.dimensions() == dim
        assert conn.execute("SELECT name FROM photos ORDER BY embedding <=> %s LIMIT 1", (vector,)).fetchone()[0] \
            == photos[0].name


def test_an_unknown_name_is_an_error(backfilled):
    with psycopg.connect(backfilled) as conn, pytest.raises(LookupError):
        clip_photos.similar_photos(conn, "no such photo.png")


def test_the_command_line(backfilled, photos):
    run = lambda *args: subprocess.run([sys.executable, "clip_photos.py", *args], cwd=Path(__file__).parent,
                                       env={**os.environ, "PGDATABASE": "clip_psycopg"}, check=True,
                                       capture_output=True, text=True).stdout.splitlines()
    assert run("load", str(photos[0]))[0] == "0 photos inserted"
    lines = run("like", photos[1].name, "-k", "3")
    assert len(lines) == 3 and lines[0].split() == ["0.0000", photos[1].name]
    assert len(run("text", "a cat", "-k", "2")) == 2
