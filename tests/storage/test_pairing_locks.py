"""The pairing locks on PostgreSQL, as two processes take them: which batches exclude which,
this release against the one before it (whose prediction batches take PAIRING shared and whose
label batches take it exclusively, the keys fixed in storage/locks.py)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from app.storage import locks
from tests.conftest import _psycopg_dsn

MODEL = 7
OLD_PREDICTIONS = f"SELECT pg_advisory_xact_lock_shared({locks.PAIRING}, {MODEL}); "
OLD_LABELS = f"SELECT pg_advisory_xact_lock({locks.PAIRING}, {MODEL}); "
NEW_PREDICTIONS = locks.pairing_sql({MODEL}, labels=False)
NEW_LABELS_MODEL = locks.pairing_sql({MODEL}, labels=True)


def striped(stripe: int) -> str:
    return locks.pairing_sql({MODEL}, labels=True, stripe=stripe)


@pytest.fixture
def dsn(pg_url: str) -> str:
    return _psycopg_dsn(pg_url)


def waits(dsn: str, first: str, second: str) -> bool:
    """Whether a transaction taking ``second`` waits for one holding ``first``: it gives up
    after 50 ms (lock_timeout) if so."""
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        a.execute(first)  # psycopg opens a transaction: held until the rollback below
        b.execute("SET lock_timeout = '50ms'")
        try:
            b.execute(second)
        except errors.LockNotAvailable:
            return True
        finally:
            a.rollback()
            b.rollback()
        return False


@pytest.mark.parametrize("first, second", [
    (OLD_LABELS, NEW_PREDICTIONS), (NEW_PREDICTIONS, OLD_LABELS),
    (OLD_PREDICTIONS, NEW_LABELS_MODEL), (NEW_LABELS_MODEL, OLD_PREDICTIONS),
    (NEW_PREDICTIONS, NEW_LABELS_MODEL), (NEW_LABELS_MODEL, NEW_PREDICTIONS),
], ids=["old-labels/new-predictions", "new-predictions/old-labels",
        "old-predictions/new-labels", "new-labels/old-predictions",
        "predictions/labels", "labels/predictions"])
def test_labels_by_model_and_predictions_of_either_release_exclude_each_other(
        dsn, first, second):
    """During a rolling upgrade (labels by model, the default): a label batch and a prediction
    batch of one model never overlap, whichever release each process runs."""
    assert waits(dsn, first, second)


def test_striped_labels_exclude_this_releases_predictions_on_every_stripe(dsn):
    for stripe in range(locks.STRIPES):
        assert waits(dsn, NEW_PREDICTIONS, striped(stripe)), stripe
        assert waits(dsn, striped(stripe), NEW_PREDICTIONS), stripe


def test_label_batches_of_one_model_share_when_striped(dsn):
    """The point of the stripes: label batches on two stripes run side by side, where the
    model's own lock makes them wait for each other; prediction batches always share."""
    assert not waits(dsn, striped(0), striped(1))
    assert not waits(dsn, striped(3), striped(locks.STRIPES - 1))
    assert waits(dsn, striped(2), striped(2))  # one stripe: one batch at a time
    assert waits(dsn, NEW_LABELS_MODEL, NEW_LABELS_MODEL)
    assert waits(dsn, OLD_LABELS, NEW_LABELS_MODEL)
    assert not waits(dsn, NEW_PREDICTIONS, NEW_PREDICTIONS)
    assert not waits(dsn, OLD_PREDICTIONS, NEW_PREDICTIONS)
    assert not waits(dsn, NEW_PREDICTIONS, OLD_PREDICTIONS)


def test_striped_labels_do_not_exclude_an_older_releases_predictions(dsn):
    """Why `striped` waits until no process of an earlier release is left: that release's
    prediction batches take PAIRING alone, which a stripe does not conflict with."""
    assert not waits(dsn, OLD_PREDICTIONS, striped(0))
    assert not waits(dsn, striped(0), OLD_PREDICTIONS)


def test_locks_of_several_models_are_taken_in_model_order():
    """One order for every batch, so two batches of several models cannot deadlock."""
    sql = locks.pairing_sql({9, 2, 5}, labels=True, stripe=4)
    assert [s.split(", ")[-1] for s in sql.split("; ") if s] == ["2)", "5)", "9)"]
    sql = locks.pairing_sql({9, 2}, labels=False)
    per_model = [s for s in sql.split("; ") if s]
    assert len(per_model) == 2 and per_model[0].count(", 2)") == locks.STRIPES + 1
    assert per_model[0].index(f"({locks.PAIRING}, 2)") < per_model[0].index(
        f"({locks.PAIRING_STRIPE}, 2)")
