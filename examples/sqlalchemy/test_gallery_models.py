"""The SQLAlchemy example against a real cluster: rows inserted through the ORM are embedded by the database
and found in every direction. Run by scripts/test.sh with PGHOST/PGPORT pointing at the private test cluster
(tiny test model, dimension 32)."""
import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

os.environ.setdefault("CLIP_DIM", "32")
import gallery_models as gm  # noqa: E402

IMAGES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "images"
PHOTOS = ["moon_l_512x512.png", "chelsea_rgb_451x300.jpg", "rocket_rgb_progressive_640x427.jpg",
          "coffee_lossy_300x200.webp"]


@pytest.fixture(scope="module")
def engine():
    host, port = os.environ["PGHOST"], os.environ["PGPORT"]
    admin = create_engine(f"postgresql+psycopg://postgres@/postgres?host={host}&port={port}",
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("DROP DATABASE IF EXISTS clip_orm")
        conn.exec_driver_sql("CREATE DATABASE clip_orm")
    admin.dispose()
    engine = create_engine(f"postgresql+psycopg://postgres@/clip_orm?host={host}&port={port}")
    gm.create_schema(engine)
    with Session(engine) as session:
        session.add_all([gm.Photo(name=name, image=(IMAGES / name).read_bytes()) for name in PHOTOS])
        session.add_all([gm.Caption(text=t) for t in ["the moon at night", "a cat", "a rocket", "a cup of coffee"]])
        session.commit()
    yield engine
    engine.dispose()


def test_inserted_rows_are_embedded_by_the_database(engine):
    with Session(engine) as session:
        photo = session.scalars(select(gm.Photo).where(gm.Photo.name == PHOTOS[0])).one()
        caption = session.scalars(select(gm.Caption).where(gm.Caption.text == "a cat")).one()
        assert len(photo.embedding) == gm.DIM and len(caption.embedding) == gm.DIM
        same = session.execute(text("SELECT embedding = clip_embed_text('a cat') FROM orm_captions WHERE text = 'a cat'"))
        assert same.scalar_one()


def test_text_to_image(engine):
    with Session(engine) as session:
        rows = session.execute(gm.photos_for_text("a photo of the moon", limit=4)).all()
        assert sorted(r.name for r in rows) == sorted(PHOTOS)
        scores = [r.score for r in rows]
        assert scores == sorted(scores, reverse=True)


def test_image_to_image_excludes_the_query_photo(engine):
    with Session(engine) as session:
        cat = session.scalars(select(gm.Photo.id).where(gm.Photo.name == "chelsea_rgb_451x300.jpg")).one()
        names = [r.name for r in session.execute(gm.photos_like(cat, limit=10))]
        assert "chelsea_rgb_451x300.jpg" not in names and len(names) == len(PHOTOS) - 1


def test_image_to_text_and_text_to_text(engine):
    with Session(engine) as session:
        moon = session.scalars(select(gm.Photo.id).where(gm.Photo.name == PHOTOS[0])).one()
        assert len(session.execute(gm.captions_for_photo(moon, limit=3)).all()) == 3
        best = session.execute(gm.captions_for_text("a cat", limit=1)).one()
        assert best.text == "a cat" and best.score == pytest.approx(1.0, abs=1e-5)


def test_updating_a_caption_re_embeds_it(engine):
    with Session(engine) as session:
        caption = session.scalars(select(gm.Caption).where(gm.Caption.text == "a rocket")).one()
        caption.text = "a rocket launch at dawn"
        session.commit()
        session.refresh(caption)
        expected = session.execute(text("SELECT clip_embed_text('a rocket launch at dawn')::real[]")).scalar_one()
        assert list(caption.embedding) == pytest.approx(expected, abs=1e-6)


def test_orm_queries_use_the_hnsw_index(engine):
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        query = gm.photos_for_text("a cat").compile(engine, compile_kwargs={"literal_binds": True})
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN (COSTS OFF) {query}"))
        assert "orm_photos_embedding_hnsw" in plan, plan
