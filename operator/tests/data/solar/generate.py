#!/usr/bin/env python3
"""Ground truth for the operator's `solar` schedule, computed by Celery itself.

For every place and every solar event this walks one year of the run times that
Celery beat would use for `celery.schedules.solar(event, lat, lon)`: starting at
START, the next run is `last_run_at + solar.remaining_estimate(last_run_at)` with
"now" equal to `last_run_at`, which is exactly the event instant Celery computes
(beat fires once `now` reaches it and stores that moment as the new
`last_run_at`). The walk stops at END.

Needs Celery >= 5.7 (whose `solar` skips days on which the event does not occur;
5.3 to 5.6 raise TypeError on such days) and ephem:

    pip install "celery>=5.7,<6" ephem
    python3 generate.py            # writes celery_solar_2026.json beside this file

Output (one JSON object, one line per series): `fires_ms` are the run times as
integer Unix milliseconds, truncated (ephem's dates are fractional seconds and
Celery truncates them to microseconds).
"""

import json
import os
from datetime import datetime, timedelta, timezone

import celery
import ephem
from celery import Celery
from celery.schedules import solar

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
END = datetime(2027, 1, 1, tzinfo=timezone.utc)

PLACES = [
    ("equator", 0.0, 0.0),
    ("berlin", 52.52, 13.405),
    ("sydney", -33.87, 151.21),
    ("new_york", 40.71, -74.0),
    ("reykjavik", 64.15, -21.94),
    ("tromso", 69.65, 18.96),  # polar night and midnight sun
    ("svalbard", 78.22, 15.65),
    ("mcmurdo", -77.85, 166.67),
]

EVENTS = [
    "dawn_astronomical",
    "dawn_nautical",
    "dawn_civil",
    "sunrise",
    "solar_noon",
    "sunset",
    "dusk_civil",
    "dusk_nautical",
    "dusk_astronomical",
]


def version(text):
    return tuple(int(part) for part in text.split(".")[:2])


def walk(app, event, lat, lon):
    clock = {"now": START}
    schedule = solar(event, lat, lon, nowfun=lambda: clock["now"], app=app)
    fires = []
    last_run_at = START
    while True:
        clock["now"] = last_run_at
        fire = last_run_at + schedule.remaining_estimate(last_run_at)
        if fire >= END:
            return fires
        if fire <= last_run_at or fire - last_run_at > timedelta(days=schedule.max_search_days):
            raise SystemExit(f"{event} at {lat},{lon}: no event after {last_run_at}")
        # Beat's view: not due a millisecond before the instant, due at it.
        clock["now"] = fire - timedelta(milliseconds=1)
        assert not schedule.is_due(last_run_at)[0]
        clock["now"] = fire
        assert schedule.is_due(last_run_at)[0]
        fires.append(fire)
        last_run_at = fire


def unix_ms(at):
    delta = at - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def main():
    if version(celery.__version__) < (5, 7):
        raise SystemExit(f"celery {celery.__version__}: need >= 5.7 (see the docstring)")
    app = Celery("solar-ground-truth", set_as_current=False)
    app.conf.enable_utc = True
    app.conf.timezone = "UTC"
    series = []
    for place, lat, lon in PLACES:
        for event in EVENTS:
            fires = walk(app, event, lat, lon)
            series.append(
                {
                    "place": place,
                    "lat": lat,
                    "lon": lon,
                    "event": event,
                    "fires_ms": [unix_ms(at) for at in fires],
                }
            )
    header = {
        "celery": celery.__version__,
        "ephem": ephem.__version__,
        "start": START.isoformat().replace("+00:00", "Z"),
        "end": END.isoformat().replace("+00:00", "Z"),
    }
    lines = [json.dumps(header)[:-1] + ', "series": [']
    lines += [json.dumps(entry, separators=(",", ":")) + "," for entry in series]
    lines[-1] = lines[-1][:-1]
    lines.append("]}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "celery_solar_2026.json")
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    total = sum(len(entry["fires_ms"]) for entry in series)
    print(f"wrote {path}: {len(series)} series, {total} fires")


if __name__ == "__main__":
    main()
