from datetime import timedelta

from celery import Celery
from celery.schedules import crontab, solar

app = Celery("beatproj")
app.conf.timezone = "Europe/Berlin"


@app.task
def add(x, y):
    return x + y


@app.task
def refresh_cache(force=False):
    return force


@app.task
def ping():
    return "pong"


app.conf.beat_schedule = {
    "add every 10 seconds": {"task": "beatproj.celery.add", "schedule": 10.0, "args": (2, 3)},
    "hourly cache refresh": {
        "task": "beatproj.celery.refresh_cache",
        "schedule": timedelta(hours=1),
        "kwargs": {"force": True},
        "options": {"queue": "cache", "expires": 300},
    },
    "every 90 minutes": {"task": "beatproj.celery.ping", "schedule": timedelta(minutes=90)},
    "three-hourly and office hours": {
        "task": "beatproj.celery.refresh_cache",
        "schedule": crontab(minute=0, hour="*/3,8-12"),
    },
    "weekday mornings": {
        "task": "beatproj.celery.ping",
        "schedule": crontab(minute=30, hour=7, day_of_week="mon-fri"),
        "options": {"priority": 5},
    },
    "first of the month": {
        "task": "beatproj.celery.ping",
        "schedule": crontab(minute=0, hour=0, day_of_month="1"),
    },
    "first monday of each quarter": {
        "task": "beatproj.celery.ping",
        "schedule": crontab(
            minute=15, hour=4, day_of_week="mon", day_of_month="1-7", month_of_year="*/3"
        ),
    },
    "noon and half past": {
        "task": "beatproj.celery.ping",
        "schedule": crontab(minute={0, 30}, hour=12),
    },
    "sunday nights": {
        "task": "beatproj.celery.ping",
        "schedule": crontab(minute="*/15", hour="22-23", day_of_week="sun"),
        "options": {"routing_key": "reports", "headers": {"tenant": "acme"}},
    },
    "at sunset": {"task": "beatproj.celery.ping", "schedule": solar("sunset", 52.52, 13.40)},
    # Dusk in Tromsø: no civil dusk in the weeks around midsummer.
    "tromso dusk": {"task": "beatproj.celery.ping", "schedule": solar("dusk_civil", 69.65, 18.96)},
    # Not importable, each for a stated reason.
    "twice a second": {"task": "beatproj.celery.ping", "schedule": 0.5},
    "object argument": {
        "task": "beatproj.celery.add",
        "schedule": 60.0,
        "args": (object(), 1),
    },
}


@app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    sender.add_periodic_task(
        crontab(hour=2, minute=45, day_of_week="sat"), ping.s(), name="saturday night ping"
    )
    sender.add_periodic_task(30.0, add.s(1, 1), name="half-minute add")
