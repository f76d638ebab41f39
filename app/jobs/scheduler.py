"""APScheduler, in a background thread of `modelmon serve` or of `modelmon worker`. Ticks
are aligned to the clock, a little after each window boundary, so every replica agrees on
which window a tick computes. On Postgres every replica runs the
scheduler and the runner's advisory locks share the work; on SQLite one process owns it,
decided by an exclusive lock on a file next to the database.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from app.evaluation.profiles import ProfileCache
from app.evaluation.windows import aligned_end
from app.jobs import runner
from app.jobs.retention import run_retention
from app.settings import Settings
from app.storage.db import clock
from app.storage.partitions import PartitionManager

log = logging.getLogger("modelmon.scheduler")
# Seconds after a boundary at which a tick fires: late-arriving records of the window that
# just closed have a moment to land.
TICK_OFFSET_SECONDS = 1.0
# Seconds after start of one extra tick: the windows due are computed and exported at once,
# not at the second boundary from now (up to two intervals, 10 minutes by default, later).
FIRST_TICK_SECONDS = 10.0


def _sqlite_owner_lock(engine: Engine) -> IO[Any] | None | bool:
    """True when not on SQLite; the open lock file when this process owns the scheduler;
    None when another process does."""
    if engine.dialect.name != "sqlite":
        return True
    db = make_url(str(engine.url)).database
    if not db or db == ":memory:":
        return True
    f = open(Path(db).with_name(Path(db).name + ".scheduler.lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


class JobScheduler:
    def __init__(self, engine: Engine, settings: Settings, partitions: PartitionManager,
                 *, hooks: Any = None,
                 profiles: ProfileCache | None = None) -> None:
        self.engine = engine
        self.profiles = profiles or ProfileCache()
        self.settings = settings
        self.partitions = partitions
        self.hooks = hooks
        self._owner: Any = None
        self._stopping = threading.Event()
        self._busy = threading.Lock()  # held while a tick or retention runs
        self.scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None})

    def _first_run(self, interval: float) -> datetime:
        now = datetime.now(UTC)
        return aligned_end(now, interval) + timedelta(seconds=interval
                                                             + TICK_OFFSET_SECONDS)

    def tick(self) -> None:
        """Every due window; one log line and the scheduler metrics per tick."""
        on_done = self.hooks.job_done if self.hooks is not None else None
        with self._busy:
            if self._stopping.is_set():
                return
            started = time.monotonic()
            outcome, counts = "success", {}
            try:
                counts = runner.tick(self.engine, self.settings, now=self._now(),
                                     on_done=on_done, profiles=self.profiles,
                                     stopping=self._stopping.is_set, on_upkeep=None
                                     if self.hooks is None else self.hooks.summaries_kept)
            except Exception:
                outcome = "failure"
                log.exception("scheduler tick failed", extra={"event": "tick",
                                                              "outcome": outcome})
            seconds = time.monotonic() - started
            if self.hooks is not None:
                self.hooks.tick_done(outcome, seconds)
            if outcome == "success":
                log.info("tick: %s", ", ".join(f"{n} {k}" for k, n in counts.items())
                         or "nothing due", extra={
                             "event": "tick", "outcome": outcome,
                             "duration_seconds": round(seconds, 6),
                             "windows": {k: n for k, n in counts.items() if k != "stopped"},
                             "stopped": bool(counts.get("stopped"))})

    def _now(self) -> datetime:
        """The database's time; how far this machine's clock is from it goes to /metrics
        (modelmon_clock_skew_seconds) and, past MODELMON_MAX_CLOCK_SKEW_SECONDS, to the log."""
        here = datetime.now(UTC)
        now = clock(self.engine)
        skew = (here - now).total_seconds()
        if self.hooks is not None:
            self.hooks.clock_seen(skew)
        if abs(skew) > self.settings.max_clock_skew_seconds:
            log.warning("this machine's clock is %+.1f s off the database's: windows and "
                        "retention follow the database's", skew,
                        extra={"event": "clock_skew", "skew_seconds": round(skew, 3)})
        return now

    def retention(self) -> None:
        with self._busy:
            if self._stopping.is_set():
                return
            try:
                run_retention(self.engine, self.settings, self.partitions, now=self._now())
                self.partitions.ensure_ahead(self.settings.partition_days_ahead)
            except Exception:
                log.exception("retention failed")

    def start(self) -> bool:
        """Start, unless another process owns the scheduler of this SQLite file."""
        self._owner = _sqlite_owner_lock(self.engine)
        if self._owner is None:
            log.info("another process runs the scheduler for this SQLite database")
            return False
        s = self.settings
        self.scheduler.add_job(self.tick, IntervalTrigger(
            seconds=s.job_interval_seconds, start_date=self._first_run(s.job_interval_seconds)),
            id="windows", name="drift, calibration, cohorts, labels")
        self.scheduler.add_job(self.tick, DateTrigger(
            run_date=datetime.now(UTC) + timedelta(seconds=FIRST_TICK_SECONDS)),
            id="first-tick", name="the windows due at start")
        self.scheduler.add_job(self.retention, IntervalTrigger(
            seconds=s.retention_interval_seconds,
            start_date=datetime.now(UTC) + timedelta(seconds=5)), id="retention")
        self.scheduler.start()
        return True

    def shutdown(self, timeout: float) -> None:
        """Start no further window; let the one running finish for up to ``timeout`` seconds.
        One still running after that is abandoned: the process exits at once, its window's
        transaction is rolled back by the database (results and the success row are written
        in one transaction, so nothing of it is stored) and a later tick computes it."""
        self._stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        finished = self._busy.acquire(timeout=timeout)
        if not finished:
            log.error("a job window was still running %.0f s after shutdown began: exiting "
                      "without it (its transaction is rolled back)", timeout,
                      extra={"event": "shutdown", "outcome": "abandoned"})
            logging.shutdown()
            os._exit(1)
        self._busy.release()
        log.info("scheduler stopped", extra={"event": "shutdown", "outcome": "clean"})
        if self._owner not in (None, True):
            self._owner.close()
