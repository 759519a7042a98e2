"""A Django + Celery project whose beat schedule the import e2e test moves over.

Its entries cover what `celery beat` reads: `beat_schedule` (numbers, timedeltas, crontabs
written as strings, ints and sets, options), `add_periodic_task` from
`on_after_configure`, and django-celery-beat rows (`seed.py`). A few are deliberately
impossible to import (sub-second, arguments that are not JSON, one-off).
"""

from .celery import app

__all__ = ["app"]
