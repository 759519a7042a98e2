# The Celery app is loaded with Django, so `shared_task` uses it and `celery -A site_project`
# finds it (as `site_project.celery_app`).
from .celery import app as celery_app

__all__ = ("celery_app",)
