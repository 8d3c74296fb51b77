"""An ORM view of clip_search: SQLAlchemy 2 models whose embeddings the database computes.

Photo.embedding is a generated column (computed by the extension from the image on INSERT);
Caption.embedding is filled by the extension's trigger. Python never runs a model and never sees an
embedding it did not ask for. Queries in every direction are ordinary ORM expressions.

The embedding dimension is the model's (512 for ViT-B-32); CLIP_DIM overrides it.
"""
import os

from pgvector.sqlalchemy import Vector
from sqlalchemy import Computed, FetchedValue, Index, LargeBinary, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DIM = int(os.environ.get("CLIP_DIM", "512"))


class Base(DeclarativeBase):
    pass


class Photo(Base):
    __tablename__ = "orm_photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    image: Mapped[bytes] = mapped_column(LargeBinary)
    embedding = mapped_column(Vector(DIM), Computed("clip_embed_image(image)", persisted=True))
    __table_args__ = (
        Index("orm_photos_embedding_hnsw", "embedding", postgresql_using="hnsw",
              postgresql_ops={"embedding": "vector_cosine_ops"}),
    )


class Caption(Base):
    __tablename__ = "orm_captions"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(1000))
    embedding = mapped_column(Vector(DIM), server_default=FetchedValue(), server_onupdate=FetchedValue())
    __table_args__ = (
        Index("orm_captions_embedding_hnsw", "embedding", postgresql_using="hnsw",
              postgresql_ops={"embedding": "vector_cosine_ops"}),
    )


CAPTION_TRIGGER = """
CREATE TRIGGER orm_captions_embed BEFORE INSERT OR UPDATE OF text ON orm_captions
    FOR EACH ROW EXECUTE FUNCTION clip_embed_trigger('text', 'embedding')
"""


def create_schema(engine):
    """Creates the extension, the tables with their indexes, and the caption trigger."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS clip_search CASCADE")
        Base.metadata.create_all(conn)
        conn.exec_driver_sql(CAPTION_TRIGGER)


def photos_for_text(query: str, limit: int = 5):
    """Text to image."""
    distance = Photo.embedding.cosine_distance(func.clip_embed_text(query))
    return select(Photo.name, (1 - distance).label("score")).order_by(distance).limit(limit)


def photos_like(photo_id: int, limit: int = 5):
    """Image to image, the query photo excluded."""
    query_vector = select(Photo.embedding).where(Photo.id == photo_id).scalar_subquery()
    distance = Photo.embedding.cosine_distance(query_vector)
    return (select(Photo.name, (1 - distance).label("score"))
            .where(Photo.id != photo_id).order_by(distance).limit(limit))


def captions_for_photo(photo_id: int, limit: int = 5):
    """Image to text: rank captions for a photo."""
    query_vector = select(Photo.embedding).where(Photo.id == photo_id).scalar_subquery()
    distance = Caption.embedding.cosine_distance(query_vector)
    return select(Caption.text, (1 - distance).label("score")).order_by(distance).limit(limit)


def captions_for_text(query: str, limit: int = 5):
    """Text to text."""
    distance = Caption.embedding.cosine_distance(func.clip_embed_text(query))
    return select(Caption.text, (1 - distance).label("score")).order_by(distance).limit(limit)
