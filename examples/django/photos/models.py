"""A photo stored as bytea with its CLIP embedding, which the database computes (photos.search.embed_photos)."""
from django.db import models
from pgvector.django import HnswIndex, VectorField


class Photo(models.Model):
    name = models.TextField(unique=True)
    image = models.BinaryField()
    # vector(N) in the database, N being the model's dimension: the migration reads it from clip_info(), so the
    # field itself names none. NULL until embedded.
    embedding = VectorField(null=True, editable=False)

    class Meta:
        indexes = [HnswIndex(name="photo_embedding_hnsw", fields=["embedding"], opclasses=["vector_cosine_ops"])]

    def __str__(self):
        return self.name
