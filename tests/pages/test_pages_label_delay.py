"""The label delay on a version page's status strip is the labels job's stored result for the
calibration window, read from the page and compared with the stored row itself; without a
stored result for the window the page says so."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from app.jobs.runner import tick
from app.storage.tables import metric_results
from tests.factories import iso
from tests.jobs_data import latest_window, post_all, traffic
from tests.pages.pageparse import parse
from tests.pages.pages_data import page_settings, register, window_params
from tests.pages.test_pages import shown_equals

PAGE = "/ui/models/credit/versions/v1"
METRICS = ("label_delay_p50_seconds", "label_delay_p90_seconds")


@pytest.fixture
def settings(db_url: str):
    return page_settings(db_url)


def seed_late_labels(client, n: int = 1500) -> tuple[datetime, datetime]:
    """The credit model's v1 with a reference and ``n`` predictions in the latest window,
    each labeled a different while later (up to the window's end): past 200 labels the
    delay's KLL sketch compacts at random, so only a stored figure is one answer."""
    rng = np.random.default_rng(11)
    register(client, rng, 2000)
    start, end = latest_window()
    records, _, y, _ = traffic(rng, n, start, end)
    post_all(client, "/v1/predictions", records)
    labels = []
    for i, rec in enumerate(records):
        t = datetime.fromisoformat(rec["timestamp"])
        late = (end - t).total_seconds() * float(rng.uniform(0.05, 1.0))
        labels.append({"model": "credit", "prediction_id": rec["prediction_id"],
                       "label": "bad" if y[i] else "good",
                       "timestamp": iso(t + timedelta(seconds=late))})
    post_all(client, "/v1/labels", labels)
    return start, end


def stored(engine, start: datetime, end: datetime) -> dict[str, float | None]:
    """The labels job's rows for exactly the window, straight from the results table."""
    with engine.connect() as conn:
        rows = conn.execute(select(metric_results.c.metric, metric_results.c.value,
                                   metric_results.c.window_start, metric_results.c.window_end)
                            .where(metric_results.c.metric.in_(METRICS))).all()
    out = {}
    for metric, value, ws, we in rows:
        ws, we = (t if t.tzinfo else t.replace(tzinfo=start.tzinfo) for t in (ws, we))
        if ws == start and we == end:
            out[metric] = value
    return out


def test_the_status_strip_shows_the_stored_label_delay_of_its_window(client, engine,
                                                                     settings):
    start, end = seed_late_labels(client)
    params = window_params(start, end)
    before = parse(client.get(PAGE, params=params).text).fields["check:calibration"]
    assert before["label_delay"] == "no job result yet"
    counts = tick(engine, settings, now=end + timedelta(seconds=1))
    assert counts.get("success", 0) > 0 and "failure" not in counts, counts
    want = stored(engine, start, end)
    assert set(want) == set(METRICS) and all(v is not None and v > 0 for v in want.values())
    assert want["label_delay_p90_seconds"] > want["label_delay_p50_seconds"]
    text = client.get(PAGE, params=params).text
    strip = parse(text).fields["check:calibration"]
    assert "label_delay" not in strip
    for metric, value in want.items():
        shown_equals(strip[metric], value)  # what a person reads, to 4 digits
        exact = re.search(rf'data-field="{metric}" data-value="([^"]+)"', text)
        assert exact is not None and float(exact.group(1)) == value  # and the stored float
    # another window than the job's has no stored result: the page says so, never guesses
    other = window_params(start - timedelta(hours=1), end - timedelta(hours=1))
    strip = parse(client.get(PAGE, params=other).text).fields["check:calibration"]
    assert strip["label_delay"] == "no job result yet"
