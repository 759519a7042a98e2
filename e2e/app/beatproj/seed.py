"""Creates the django-celery-beat tables and rows of the import test (DJANGO_SETTINGS_MODULE
and BEAT_DB set by the test)."""

import datetime
import json
import zoneinfo

import django

django.setup()

from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)

from django_celery_beat.models import (  # noqa: E402
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

five_minutes, _ = IntervalSchedule.objects.get_or_create(every=5, period=IntervalSchedule.MINUTES)
two_days, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.DAYS)
new_york_morning, _ = CrontabSchedule.objects.get_or_create(
    minute="0", hour="6", day_of_week="*", day_of_month="*", month_of_year="*",
    timezone=zoneinfo.ZoneInfo("America/New_York"),
)
every_fortnight_day, _ = CrontabSchedule.objects.get_or_create(
    minute="20", hour="3", day_of_week="*", day_of_month="1,15", month_of_year="*",
    timezone=zoneinfo.ZoneInfo("UTC"),
)
sydney_sunrise, _ = SolarSchedule.objects.get_or_create(
    event="sunrise", latitude="-33.870000", longitude="151.210000"
)
clocked, _ = ClockedSchedule.objects.get_or_create(
    clocked_time=datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
)

PeriodicTask.objects.update_or_create(
    name="db every five minutes",
    defaults=dict(
        task="beatproj.celery.add", interval=five_minutes, args=json.dumps([4, 5]),
        queue="db", priority=3, headers=json.dumps({"h": "v"}), expire_seconds=60,
        start_time=datetime.datetime(2029, 1, 1, tzinfo=datetime.timezone.utc),
        description="sums every five minutes",
    ),
)
PeriodicTask.objects.update_or_create(
    name="db new york morning",
    defaults=dict(task="beatproj.celery.ping", crontab=new_york_morning),
)
PeriodicTask.objects.update_or_create(
    name="db fortnightly",
    defaults=dict(
        task="beatproj.celery.refresh_cache", crontab=every_fortnight_day,
        kwargs=json.dumps({"force": False}),
        expires=datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc),
    ),
)
PeriodicTask.objects.update_or_create(
    name="db every two days, disabled",
    defaults=dict(task="beatproj.celery.ping", interval=two_days, enabled=False),
)
PeriodicTask.objects.update_or_create(
    name="db one off",
    defaults=dict(task="beatproj.celery.ping", interval=five_minutes, one_off=True),
)
PeriodicTask.objects.update_or_create(
    name="db sydney sunrise",
    defaults=dict(task="beatproj.celery.ping", solar=sydney_sunrise),
)
PeriodicTask.objects.update_or_create(
    name="db clocked",
    defaults=dict(task="beatproj.celery.ping", clocked=clocked, one_off=True),
)
