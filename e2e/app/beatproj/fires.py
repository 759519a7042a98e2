"""Prints, as JSON {entry name: [RFC 3339 instants]}, the next N fires after AFTER that
Celery's own schedule objects compute for every beat_schedule entry and django-celery-beat
row, each entry taken as last run at AFTER (as a new entry is when beat starts); a clocked
row fires once.

Usage: python -m beatproj.fires AFTER N
"""

import datetime
import json
import sys

import django

django.setup()

from celery.schedules import maybe_schedule  # noqa: E402
from django_celery_beat.models import PeriodicTask  # noqa: E402

from . import app  # noqa: E402


def fires(schedule, after, count):
    # A fixed clock: each estimate is then exactly "next fire minus the last run".
    out, last = [], after
    for _ in range(count):
        schedule.nowfun = lambda last=last: last
        nxt = last + schedule.remaining_estimate(last)
        out.append(nxt.astimezone(datetime.timezone.utc).isoformat())
        last = nxt
    return out


def main():
    after = datetime.datetime.fromisoformat(sys.argv[1])
    count = int(sys.argv[2])
    app.loader.import_default_modules()
    app.finalize(auto=True)
    result = {}
    for name, entry in app.conf.beat_schedule.items():
        schedule = maybe_schedule(entry["schedule"], app=app)
        if hasattr(schedule, "remaining_estimate"):
            result[name] = fires(schedule, after, count)
    for row in PeriodicTask.objects.exclude(interval=None, crontab=None, clocked=None, solar=None):
        # A clocked row is one-off: beat disables it after its one run.
        n = 1 if row.clocked is not None else count
        result[row.name] = fires(row.schedule, after, n)
    json.dump(result, sys.stdout, indent=1)


main()
