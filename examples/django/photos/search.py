"""Loading, embedding and searching photos with the ORM; the database runs the model."""
from pathlib import Path

from django.db import connection
from django.db.models import Func, Subquery, TextField, Value
from pgvector.django import CosineDistance, VectorField

from .models import Photo


def add_photos(paths) -> int:
    """Inserts each file (its bytes go to the BinaryField, bytea), named by its file name, unless a photo of that
    name is there; returns how many were new."""
    before = Photo.objects.count()
    Photo.objects.bulk_create([Photo(name=Path(p).name, image=Path(p).read_bytes()) for p in paths],
                              ignore_conflicts=True)
    return Photo.objects.count() - before


def embed_photos(batch_size: int = 64) -> None:
    """Embeds every photo whose embedding is NULL with CALL clip_backfill. The procedure COMMITs after each batch,
    so it must run outside a transaction: not inside transaction.atomic(), ATOMIC_REQUESTS views or a TestCase
    (use TransactionTestCase), where it refuses to start (SQLSTATE 2D000)."""
    if connection.in_atomic_block:
        raise RuntimeError("clip_backfill commits as it goes: call embed_photos() outside transaction.atomic()")
    with connection.cursor() as cursor:
        cursor.execute("CALL clip_backfill(%s::regclass, %s::text, %s::text, %s)",
                       [Photo._meta.db_table, "image", "embedding", batch_size])


def embed_text(query: str) -> Func:
    """clip_embed_text(query) as an ORM expression."""
    return Func(Value(query, output_field=TextField()), function="clip_embed_text", output_field=VectorField())


def photos_for_text(query: str, k: int = 5):
    """Text to image: photos with their cosine distance, closest first (the image itself is not fetched)."""
    return (Photo.objects.only("name").annotate(distance=CosineDistance("embedding", embed_text(query)))
            .order_by("distance")[:k])


def photos_like(name: str, k: int = 5):
    """Image to image: the photos closest to the photo called NAME, that photo first (distance 0). Its embedding
    is a subquery, so it never travels to Python."""
    query_vector = Subquery(Photo.objects.filter(name=name).values("embedding")[:1])
    photos = list(Photo.objects.only("name").annotate(distance=CosineDistance("embedding", query_vector))
                  .order_by("distance")[:k])
    if photos and photos[0].distance is None:
        raise Photo.DoesNotExist(f"no embedded photo is called {name!r}")
    return photos
