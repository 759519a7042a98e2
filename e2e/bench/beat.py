"""A real `celery beat` (celery.beat.Service, in-memory Scheduler) with N entries every
second against CELERY_BROKER_URL; prints push lateness as JSON.

Celery's interval schedule is relative to the last send, so beat drifts; lateness here is
measured against each entry's ideal one-second grid, anchored at its first send (the
operator's slots are anchored the same way, at creation): send time minus grid instant.
"""

import argparse
import json
import sys
import threading
import time
from datetime import timedelta

from celery import Celery
from celery.beat import Scheduler, Service
from celery.signals import after_task_publish

parser = argparse.ArgumentParser()
parser.add_argument("--tasks", type=int, required=True)
parser.add_argument("--warmup", type=float, default=3)
parser.add_argument("--seconds", type=float, default=10)
opts = parser.parse_args()

app = Celery("bench")
app.conf.update(
    broker_url=__import__("os").environ["CELERY_BROKER_URL"],
    timezone="UTC",
    enable_utc=True,
    beat_schedule={
        f"t{i}": {"task": "tasks.add", "schedule": timedelta(seconds=1), "args": (i, 1)}
        for i in range(opts.tasks)
    },
    beat_max_loop_interval=1,
)

sends = []  # (entry index, time)


@after_task_publish.connect
def _sent(sender=None, body=None, **_):
    sends.append((body[0][0], time.time()))


service = Service(app, scheduler_cls=Scheduler, max_interval=1)
thread = threading.Thread(target=service.start, daemon=True)
t0 = time.time()
thread.start()
time.sleep(opts.warmup + opts.seconds)
service.stop()
end = t0 + opts.warmup + opts.seconds
time.sleep(0.2)
sends = list(sends)

first = {}
count = {}
late = []
for i, t in sends:
    if i not in first:
        first[i], count[i] = t, 0
        continue
    count[i] += 1
    # The k-th send after the first belongs to grid instant first + k: if beat falls
    # behind, its sends drift later and later, and that is lateness too.
    if t0 + opts.warmup <= t <= end:
        late.append(t - (first[i] + count[i]))
late.sort()


def q(p):
    if not late:
        return None
    return late[min(len(late) - 1, max(0, int(len(late) * p + 0.999999) - 1))] * 1000


print(json.dumps({
    "pushes": len(late),
    "p50_ms": q(0.50),
    "p99_ms": q(0.99),
    "max_ms": late[-1] * 1000 if late else None,
    "sent": len(sends),
    "entries_sent": len(first),
}))
sys.stdout.flush()
