"""The extensions, then the table, whose vector column gets the dimension of the server's model, then its HNSW
index (which needs a column with a dimension). Django's test runner applies this to its test database too."""
from django.contrib.postgres.operations import CreateExtension
from django.db import migrations, models
from pgvector.django import HnswIndex, VectorExtension, VectorField


def set_embedding_dimension(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT (clip_info()->>'embed_dim')::int")
        dim = cursor.fetchone()[0]
        cursor.execute(f"ALTER TABLE photos_photo ALTER COLUMN embedding TYPE vector({int(dim)})")


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        VectorExtension(),
        CreateExtension("clip_search"),
        migrations.CreateModel(
            name="Photo",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.TextField(unique=True)),
                ("image", models.BinaryField()),
                ("embedding", VectorField(editable=False, null=True)),
            ],
        ),
        migrations.RunPython(set_embedding_dimension, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="photo",
            index=HnswIndex(fields=["embedding"], name="photo_embedding_hnsw", opclasses=["vector_cosine_ops"]),
        ),
    ]
