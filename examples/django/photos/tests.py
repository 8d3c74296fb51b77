"""The Django example against a real server (scripts/test.sh points PGHOST and PGPORT at the private 'test'
cluster: tiny model, dimension 32). Django's runner creates test_clip_django and applies the migration, which
creates the extensions. TransactionTestCase, not TestCase: TestCase runs each test inside a transaction, where
CALL clip_backfill cannot COMMIT."""
from io import StringIO
from pathlib import Path

from django.core.management import call_command
from django.db import InternalError, connection, transaction
from django.test import TransactionTestCase

from photos import search
from photos.models import Photo

IMAGES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "images"
PHOTOS = [IMAGES / name for name in ("moon_l_512x512.png", "chelsea_rgb_451x300.jpg",
                                     "rocket_rgb_progressive_640x427.jpg", "coffee_rgb_3x500.png",
                                     "astronaut_rgb_posterized_300x250.png", "camera_l_320x320.jpg")]
NAMES = sorted(p.name for p in PHOTOS)


def scalar(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


class PhotoSearchTests(TransactionTestCase):
    def setUp(self):
        self.assertEqual(search.add_photos(PHOTOS), len(PHOTOS))
        self.assertEqual(Photo.objects.filter(embedding__isnull=True).count(), len(PHOTOS))
        search.embed_photos(batch_size=4)

    def test_the_migration_gave_the_column_the_models_dimension(self):
        dim = scalar("SELECT (clip_info()->>'embed_dim')::int")
        self.assertEqual(scalar("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                "WHERE attrelid = 'photos_photo'::regclass AND attname = 'embedding'"),
                         f"vector({dim})")
        self.assertEqual(len(Photo.objects.get(name=NAMES[0]).embedding), dim)

    def test_the_backfill_embedded_every_photo_as_clip_embed_image_does(self):
        self.assertEqual(scalar("SELECT count(*) FROM photos_photo WHERE embedding = clip_embed_image(image)"),
                         len(PHOTOS))

    def test_text_to_image(self):
        photos = list(search.photos_for_text("a photo of the moon", k=4))
        self.assertEqual(len(photos), 4)
        self.assertLessEqual({p.name for p in photos}, set(NAMES))
        distances = [p.distance for p in photos]
        self.assertEqual(distances, sorted(distances))

    def test_image_to_image_ranks_the_photo_itself_first(self):
        for name in NAMES:
            photos = search.photos_like(name, k=len(NAMES))
            self.assertEqual(photos[0].name, name)
            self.assertAlmostEqual(photos[0].distance, 0, places=6)
            self.assertEqual(sorted(p.name for p in photos), NAMES)
            self.assertEqual([p.distance for p in photos], sorted(p.distance for p in photos))
        with self.assertRaises(Photo.DoesNotExist):
            search.photos_like("no such photo.png")

    def test_the_searches_use_the_hnsw_index(self):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            self.assertIn("photo_embedding_hnsw", search.photos_for_text("a cat").explain())

    def test_the_backfill_is_refused_inside_a_transaction(self):
        Photo.objects.filter(name=NAMES[0]).update(embedding=None)
        with self.assertRaisesMessage(RuntimeError, "outside transaction.atomic()"), transaction.atomic():
            search.embed_photos()
        # Without the guard: the extension's own refusal, before anything is embedded.
        with self.assertRaisesMessage(InternalError, "cannot run inside a transaction block"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("CALL clip_backfill('photos_photo'::regclass, 'image'::text, 'embedding'::text)")
        self.assertIsNone(Photo.objects.get(name=NAMES[0]).embedding)
        search.embed_photos()
        self.assertIsNotNone(Photo.objects.get(name=NAMES[0]).embedding)

    def test_the_command(self):
        out = StringIO()
        call_command("photos", "like", NAMES[1], "-k", "3", stdout=out)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0].split(), ["0.0000", NAMES[1]])
        out = StringIO()
        call_command("photos", "load", str(PHOTOS[0]), stdout=out)
        self.assertEqual(out.getvalue().splitlines()[0], "0 photos inserted")
