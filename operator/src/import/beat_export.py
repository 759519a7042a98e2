"""Print a Celery app's effective beat schedule as JSON for `celery-operator import`.

Run inside the project's own environment, where its Celery app imports:

    python3 beat_export.py -A proj [--django-celery-beat] [--include-disabled]

The entries are those `celery beat` would run: `app.conf.beat_schedule` after the app is
finalized (so `add_periodic_task` and `on_after_configure` entries are in it) and, with
`--django-celery-beat`, the rows of django-celery-beat's PeriodicTask table. Nothing is
dropped: what cannot be written as JSON is reported in the entry's `errors`.
"""

import argparse
import datetime
import json
import os
import sys

FORMAT = "celery-operator/beat-export/v1"


def _json(value, what, errors):
    """`value` if JSON can carry it unchanged (tuples become lists, as Celery sends them)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        errors.append(f"{what}: {_short(repr(value))} is not JSON ({exc})")
        return None


def _short(text, limit=120):
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field(value):
    """A crontab field in Celery's own string form (ints and sets of ints as written)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return ",".join(str(v) for v in sorted(value))


def _instant(value):
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"{value} has no time zone")
    return value.isoformat()


def _solar(event, latitude, longitude):
    # django-celery-beat keeps the coordinates as Decimal.
    return {"event": event, "latitude": float(latitude), "longitude": float(longitude)}


def _schedule(sched, timezone, errors):
    """The JSON form of a Celery schedule object (or a number of seconds); beat reads a
    crontab in the app's time zone."""
    from celery import schedules

    if isinstance(sched, (int, float)):
        return {"every_seconds": float(sched)}
    if isinstance(sched, datetime.timedelta):
        return {"every_seconds": sched.total_seconds()}
    if isinstance(sched, schedules.crontab):
        fields = {
            "minute": _field(sched._orig_minute),
            "hour": _field(sched._orig_hour),
            "day_of_week": _field(sched._orig_day_of_week),
            "day_of_month": _field(sched._orig_day_of_month),
            "month_of_year": _field(sched._orig_month_of_year),
        }
        return {"crontab": fields, "timezone": timezone}
    if isinstance(sched, schedules.solar):
        return {"solar": _solar(sched.event, sched.lat, sched.lon)}
    if isinstance(sched, schedules.schedule):
        if sched.relative:
            errors.append("schedule: relative=True rounds slots to the interval's unit")
        return {"every_seconds": sched.run_every.total_seconds()}
    return {"unsupported": _short(repr(sched))}


def _options(options, errors):
    out = {}
    for key, value in (options or {}).items():
        if key in ("queue", "routing_key", "exchange"):
            out[key] = getattr(value, "name", value)
        elif key == "expires":
            if isinstance(value, datetime.datetime):
                out["expires_at"] = _instant(value)
            elif isinstance(value, (int, float)):
                out["expires_seconds"] = float(value)
            else:
                errors.append(f"options.expires: {_short(repr(value))} is neither seconds nor a datetime")
        else:
            out[key] = _json(value, f"options.{key}", errors)
    return out


def beat_schedule_entries(app):
    entries = []
    for name, entry in sorted(app.conf.beat_schedule.items()):
        errors = []
        entries.append(
            {
                "name": name,
                "source": "beat_schedule",
                "task": entry.get("task"),
                "schedule": _schedule(entry.get("schedule"), str(app.timezone), errors),
                "args": _json(list(entry.get("args") or ()), "args", errors),
                "kwargs": _json(dict(entry.get("kwargs") or {}), "kwargs", errors),
                "options": _options(entry.get("options"), errors),
                "enabled": True,
                "errors": errors,
            }
        )
        if entry.get("relative"):
            errors.append("relative: True rounds slots to the interval's unit")
    return entries


def django_celery_beat_entries(include_disabled):
    import django

    django.setup()
    from django_celery_beat.models import PeriodicTask

    rows = PeriodicTask.objects.all() if include_disabled else PeriodicTask.objects.filter(enabled=True)
    entries = []
    for row in rows.order_by("name"):
        errors = []
        if row.interval is not None:
            schedule = {"every_seconds": row.interval.schedule.run_every.total_seconds()}
        elif row.crontab is not None:
            c = row.crontab
            schedule = {
                "crontab": {
                    "minute": c.minute,
                    "hour": c.hour,
                    "day_of_week": c.day_of_week,
                    "day_of_month": c.day_of_month,
                    "month_of_year": c.month_of_year,
                },
                "timezone": str(c.timezone),
            }
        elif row.solar is not None:
            schedule = {"solar": _solar(row.solar.event, row.solar.latitude, row.solar.longitude)}
        elif row.clocked is not None:
            schedule = {"clocked": _instant(row.clocked.clocked_time)}
        else:
            schedule = {"unsupported": "no schedule"}
        options = {}
        for key in ("queue", "exchange", "routing_key", "priority"):
            value = getattr(row, key)
            if value not in (None, ""):
                options[key] = value
        if row.expire_seconds is not None:
            options["expires_seconds"] = float(row.expire_seconds)
        entries.append(
            {
                "name": row.name,
                "source": "django_celery_beat",
                "task": row.task,
                "schedule": schedule,
                "args": _loads(row.args, "args", errors),
                "kwargs": _loads(row.kwargs, "kwargs", errors),
                "options": options,
                "headers": _loads(row.headers, "headers", errors),
                "enabled": row.enabled,
                "one_off": row.one_off,
                "start_time": _instant(row.start_time),
                # The row's expiry ends its schedule (beat disables it then).
                "end_time": _instant(row.expires),
                "description": row.description or None,
                "errors": errors,
            }
        )
    return entries


def _loads(text, what, errors):
    try:
        return json.loads(text or "null")
    except ValueError as exc:
        errors.append(f"{what}: {_short(text)} is not JSON ({exc})")
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="beat_export", description=__doc__.splitlines()[0])
    parser.add_argument("-A", "--app", required=True, help="the Celery app, as `celery -A` takes it")
    parser.add_argument("--django-celery-beat", action="store_true", help="also export django-celery-beat's rows")
    parser.add_argument("--include-disabled", action="store_true", help="export disabled rows too (as suspended)")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.getcwd())
    from celery.app.utils import find_app

    app = find_app(args.app)
    # What `celery beat` does before reading the schedule: import the task modules (Django's
    # autodiscovery included) and finalize, which runs on_after_configure and
    # add_periodic_task.
    app.loader.import_default_modules()
    app.finalize(auto=True)
    entries = beat_schedule_entries(app)
    if args.django_celery_beat:
        entries += django_celery_beat_entries(args.include_disabled)
    out = {"format": FORMAT, "timezone": str(app.timezone), "entries": entries}
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
