"""Django settings of the import test project: django-celery-beat on SQLite (BEAT_DB)."""

import os

SECRET_KEY = "beat-import-test"
INSTALLED_APPS = ["django_celery_beat"]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["BEAT_DB"]},
}
USE_TZ = True
TIME_ZONE = "Europe/Berlin"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
