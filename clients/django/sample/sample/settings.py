"""The sample project: the seeds' scenario (an Article gets a summary).
The database comes from the environment (the tests start a server)."""
import os

SECRET_KEY = "sample-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "pg_migrate_django",
    "django.contrib.contenttypes",
    "articles",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGM_DB", "sample"),
        "HOST": os.environ.get("PGM_HOST", "127.0.0.1"),
        "PORT": os.environ.get("PGM_PORT", "5432"),
        "USER": os.environ.get("PGM_USER", "postgres"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
