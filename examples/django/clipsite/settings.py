"""Settings of the minimal project around the `photos` app: a PostgreSQL database with clip_search, nothing else.

HOST, PORT and USER are left empty so that libpq's environment variables (PGHOST, PGPORT, PGUSER) apply; the
database is CLIP_DJANGO_DB (default clip_django). `manage.py test` makes and drops test_<name> itself."""
import os

SECRET_KEY = "clip-search-example-not-secret"
DEBUG = False
ALLOWED_HOSTS = []
INSTALLED_APPS = ["photos"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("CLIP_DJANGO_DB", "clip_django"),
        "HOST": "",
        "PORT": "",
        "USER": "",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
