"""The Celery test app of the end-to-end tests.

Broker and result backend come from CELERY_BROKER_URL / CELERY_RESULT_BACKEND, exactly as the
WorkerPool's Deployment sets them. Every execution of `record` is appended to the Redis list
`e2e:executed` (at E2E_RECORD_URL, default: the broker) so tests can count executions per task id.
"""

import json
import os
import time

import redis
from celery import Celery

app = Celery("tasks")
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # With a result backend (CELERY_RESULT_BACKEND): STARTED is written, and each value
    # carries its attempt (`retries`), as the operator's outcome tests read them.
    task_track_started=True,
    result_extended=True,
)

# The kombu transport option that prefixes every key and channel, for tests of non-default
# transports; it must equal the WorkerPool's transportOptions.globalKeyPrefix.
if os.environ.get("E2E_GLOBAL_KEYPREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["E2E_GLOBAL_KEYPREFIX"]}

_recorder = None


def _record_client():
    global _recorder
    if _recorder is None:
        url = os.environ.get("E2E_RECORD_URL") or os.environ["CELERY_BROKER_URL"]
        _recorder = redis.Redis.from_url(url)
    return _recorder


def _record(task, args, kwargs):
    entry = {
        "id": task.request.id,
        "task": task.name,
        "args": list(args),
        "kwargs": kwargs,
        "queue": (task.request.delivery_info or {}).get("routing_key"),
        "hostname": task.request.hostname,
        "time": time.time(),
    }
    _record_client().rpush("e2e:executed", json.dumps(entry))
    return entry


@app.task(bind=True)
def record(self, *args, **kwargs):
    """Appends this execution to e2e:executed and returns what it saw."""
    return _record(self, args, kwargs)


@app.task(bind=True)
def work(self, seconds, tag=None):
    """Works for `seconds`, then records the execution (autoscaling and shutdown tests)."""
    time.sleep(seconds)
    return _record(self, (seconds, tag), {})


@app.task
def add(x, y):
    return x + y


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task
def fail(what):
    raise ValueError(f"bad input {what!r}")


@app.task(bind=True, max_retries=3)
def flaky(self, attempts_failing):
    """Refused like the mail task's first SMTP attempts: retries until `attempts_failing`
    attempts failed, then succeeds (or fails for good once max_retries is spent)."""
    if self.request.retries < attempts_failing:
        raise self.retry(exc=ConnectionError("smtp refused"), countdown=1)
    return self.request.retries
