"""service.Ahead: work begun on another thread while a batch is copied in, or done by the
caller when it was not begun (or no pool thread has taken it up yet)."""

from __future__ import annotations

import threading

import pytest

from app.ingest.service import Ahead


def _recorder() -> tuple[list[str], object]:
    ran: list[str] = []

    def fn() -> str:
        ran.append(threading.current_thread().name)
        return f"done by {ran[-1]}"
    return ran, fn


def test_not_started_it_runs_in_the_callers_thread() -> None:
    ran, fn = _recorder()
    assert Ahead(fn).result() == f"done by {threading.current_thread().name}"
    assert len(ran) == 1


def test_started_it_runs_once_on_a_pool_thread() -> None:
    ran, record = _recorder()
    begun = threading.Event()

    def fn() -> str:
        begun.set()
        return record()
    ahead = Ahead(fn)
    ahead.start()
    assert begun.wait(30)  # taken up by a pool thread (else the caller would do it)
    out = ahead.result()
    assert len(ran) == 1 and ran[0].startswith("modelmon-ahead")
    assert out == f"done by {ran[0]}"


def test_with_every_pool_thread_busy_the_caller_does_it_at_once_and_only_once() -> None:
    release = threading.Event()
    busy = [Ahead(lambda: release.wait(30)) for _ in range(Ahead.THREADS)]
    for b in busy:
        b.start()
    try:
        ran, fn = _recorder()
        ahead = Ahead(fn)
        ahead.start()  # queued behind the busy threads
        assert ahead.result() == f"done by {threading.current_thread().name}"
    finally:
        release.set()
    assert all(b.result() is True for b in busy)
    assert ran == [threading.current_thread().name]  # the queued copy never ran


def test_an_error_on_the_pool_thread_is_raised_to_the_caller() -> None:
    def fail() -> None:
        raise ValueError("bad batch")
    ahead = Ahead(fail)
    ahead.start()
    with pytest.raises(ValueError, match="bad batch"):
        ahead.result()
