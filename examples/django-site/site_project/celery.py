"""The Celery app of the site, the standard Django way: every `CELERY_*` setting of
settings.py configures it, and each installed app's `tasks.py` is imported.

Workers run `celery -A site_project worker ...` (the WorkerPool builds that command line).
"""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_project.settings")

app = Celery("site_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def migrate_local_sqlite(**_):
    """For the example only: each pod has its own SQLite file under /tmp, so a worker
    migrates (and so seeds) its copy at start, as the web pod does before serving. A real
    site shares one database (PostgreSQL) and runs `migrate` once, in a Job or an
    init container, not here."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        call_command("migrate", interactive=False, verbosity=0)
