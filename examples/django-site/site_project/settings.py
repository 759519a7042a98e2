"""Settings of the example shop: a Django site with Redis as its cache and as Celery's broker.

Everything that differs between a laptop and the cluster comes from the environment. In the
cluster, those variables come from the connection Secrets the operator writes for each
RedisCache (`<name>-connection`, keys `url`, `baseUrl`, `host`, `port`, `password`); the
defaults below are for a laptop with one redis-server on 127.0.0.1:6379.
"""

import os
from pathlib import Path

from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",")

INSTALLED_APPS = ["shop"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "site_project.urls"
WSGI_APPLICATION = "site_project.wsgi.application"
TEMPLATES = []

# One SQLite file per pod, migrated (and seeded by shop's data migration) when the pod
# starts: enough for the example. A real site points this at its PostgreSQL.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SQLITE_PATH", "/tmp/site.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"

# The cache: the `url` of the `purpose: cache` RedisCache's connection Secret
# (redis://default:<password>@cache.<namespace>.svc:6379/0), which django-redis takes as is.
# JSON instead of pickle, so `redis-cli get :1:ranking` shows what the site stored.
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ.get("CACHE_URL", "redis://127.0.0.1:6379/0"),
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
            "SOCKET_CONNECT_TIMEOUT": 5,
            "SOCKET_TIMEOUT": 5,
        },
    }
}

# Celery (site_project/celery.py reads every CELERY_* setting). The broker and the result
# backend are databases 0 and 1 of the `purpose: broker` RedisCache: the WorkerPool sets both
# variables in its pods from the connection Secret, and the web Deployment sets them the same
# way, so the URLs (and the password in them) are never written down anywhere.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Mail goes through its own queue, so a slow SMTP server never holds up the cache refreshes.
CELERY_TASK_ROUTES = {"shop.tasks.send_welcome_mail": {"queue": "mail"}}

# What `celery beat` ran before the move. On the cluster nothing reads it: the PeriodicTasks
# of k8s/site.yaml replace it (`celery-operator import -A site_project` prints them from it).
CELERY_BEAT_SCHEDULE = {
    "refresh-ranking": {
        "task": "shop.tasks.refresh_ranking",
        "schedule": crontab(minute=0),
    },
    "refresh-ranking-demo": {
        "task": "shop.tasks.refresh_ranking",
        "schedule": 30.0,
    },
}

# Mail: Django's SMTP backend, to the SMTP server's Service in the cluster.
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "shop@example.com")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"shop": {"handlers": ["console"], "level": "INFO"}},
}
