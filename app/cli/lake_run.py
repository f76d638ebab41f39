"""Running a `modelmon backfill` plan: files folded in a process pool, each file's summaries
uploaded as soon as it is folded, a stale profile fetched again, and the progress shown
(rich on a terminal, plain lines elsewhere)."""

from __future__ import annotations

import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.cli import lake
from app.cli.client import HttpError
from app.cli.errors import CliError
from app.evaluation.fold import upload_body
from app.storage.summaries import SummaryRow

if TYPE_CHECKING:
    from app.cli.backfill import Plan, Surveyed

PER_UPLOAD = 1000  # summaries per request (the service takes up to 10,000)
UPLOAD_BYTES = 4 * 2**20  # packed bytes per request, well below the body limit
PROFILE_CHANGES = 3  # fetches of a changed profile for one file before giving up


@dataclass
class Totals:
    rows: int = 0
    units: int = 0
    accepted: int = 0
    duplicates: int = 0
    predictions: int = 0

    def counts(self) -> str:
        return f"{self.accepted} summaries stored, {self.duplicates} already stored"


class Runner:
    def __init__(self, plan: Plan, progress: Progress) -> None:
        self.plan, self.progress, self.totals = plan, progress, Totals()
        self.changes: dict[str, int] = {}

    def unit(self, u: Surveyed) -> lake.Unit:
        p = self.plan
        return lake.Unit(u.name, u.fragment, p.schema, lake.projection(p.mapping,
                                                                        p.model["task"]),
                         p.filter, p.model["task"], {v: p.docs[v] for v in u.versions},
                         p.args.version, p.labels)

    def run(self, todo: list[Surveyed]) -> None:
        """Every file folded and uploaded; at most two per worker in flight, so memory stays
        bounded whatever the dataset's size."""
        by_name = {u.name: u for u in todo}
        queue = list(reversed(todo))
        workers = self.plan.args.workers
        if workers == 1:  # in this process: nothing to gain from another
            while queue:
                u = queue.pop()
                if not self.done(lake.fold_unit(self.unit(u)), by_name[u.name]):
                    queue.append(u)
            return
        import multiprocessing

        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            pending: set[Future[lake.Folded]] = set()
            try:
                while queue or pending:
                    while queue and len(pending) < 2 * workers:
                        pending.add(pool.submit(lake.fold_unit, self.unit(queue.pop())))
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        folded = f.result()
                        if not self.done(folded, by_name[folded.name]):
                            queue.append(by_name[folded.name])
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def done(self, folded: lake.Folded, u: Surveyed) -> bool:
        """The file's summaries uploaded and recorded; False when a profile changed under
        them (the file is folded again on the new one)."""
        for version, rows in folded.summaries.items():
            if not self.upload(version, rows, lake.sequence(folded.name), folded.name):
                return False
        self.plan.state.save(folded.name, {v: self.plan.docs[v]["profile_key"]
                                           for v in u.versions})
        self.totals.rows += folded.rows
        self.totals.units += 1
        self.progress.advance(folded.rows, self.totals.counts())
        return True

    def upload(self, version: str, rows: list[SummaryRow], seq: int, name: str) -> bool:
        doc = self.plan.docs[version]
        for chunk in chunks(rows):
            body = upload_body(doc, chunk, source=self.plan.source, sequence=seq)
            try:
                self.send(body)
            except HttpError as err:
                if err.status != 409 or err.body.get("code") != "stale_profile":
                    raise CliError(f"{name}: version {version}: {refused(err, body)}") from None
                self.refetch(version, name)
                return False
        return True

    def send(self, body: dict[str, Any]) -> None:
        """One upload; one over the service's size limit (413) is sent in halves: the
        service stores per (bucket, kind, sequence), not per request."""
        try:
            answer = self.plan.api.post("/v1/summaries", body, compress=True)
        except HttpError as err:
            summaries = body["summaries"]
            if err.status != 413 or len(summaries) < 2:
                raise
            half = len(summaries) // 2
            self.send({**body, "summaries": summaries[:half]})
            self.send({**body, "summaries": summaries[half:]})
            return
        self.totals.accepted += answer["accepted"]
        self.totals.duplicates += answer["duplicates"]
        self.totals.predictions += answer["predictions"]

    def refetch(self, version: str, name: str) -> None:
        """The version's profile changed since it was fetched: fetch it again and say so."""
        from app.cli.backfill import fetch_profile, versions_of

        p = self.plan
        old = p.docs[version]
        new = fetch_profile(p.api, p.model, versions_of(p.api, p.model)[version],
                            old["bucket_seconds"])
        self.changes[name] = self.changes.get(name, 0) + 1
        if new["profile_key"] == old["profile_key"] or self.changes[name] > PROFILE_CHANGES:
            raise CliError(f"{name}: the service keeps refusing the profile of version "
                           f"{version} as stale ({old['profile_key']})")
        if new["profile"] is None:
            new["bucket_seconds"] = old["bucket_seconds"]
        p.docs[version] = new
        self.progress.note(
            f"note: the reference profile of version {version} changed during the backfill "
            f"({old['profile_key']} -> {new['profile_key']}): the buckets already sent on the "
            "old one stay as they are; the files still to send are summarised on the new one")

    def resume(self) -> str:
        done, total = len(self.plan.state.done), len([u for u in self.plan.units if u.rows])
        kept = (f"{done} of {total} files are acknowledged" + (
            f" (recorded in {self.plan.state.path})" if self.plan.state.path else ""))
        return f"{kept}; run the same command again to go on (nothing is counted twice)"


def refused(err: HttpError, body: dict[str, Any]) -> str:
    """The service's refusal, with the buckets it names (not the request's indexes)."""
    summaries = body["summaries"]
    named = [d for d in err.body.get("details") or [] if isinstance(d, dict)
             and isinstance(d.get("index"), int) and 0 <= d["index"] < len(summaries)]
    if not named:
        return str(err)
    shown = "; ".join(f"{summaries[d['index']]['kind']} of the bucket at "
                      f"{summaries[d['index']]['bucket_start']}: {d.get('problem')}"
                      for d in named[:3])
    more = f" (and {len(named) - 3} more)" if len(named) > 3 else ""
    return f"{err.status} {err.body.get('message')} [{shown}{more}]"


def chunks(rows: list[SummaryRow]) -> list[list[SummaryRow]]:
    """Rows in uploads of at most PER_UPLOAD summaries and about UPLOAD_BYTES."""
    out: list[list[SummaryRow]] = [[]]
    size = 0
    for r in rows:
        if out[-1] and (len(out[-1]) >= PER_UPLOAD or size + len(r.payload) > UPLOAD_BYTES):
            out.append([])
            size = 0
        out[-1].append(r)
        size += len(r.payload)
    return [c for c in out if c]


# --------------------------------------------------------------------------- progress


class Progress:
    """Rows folded and uploaded of the run's rows, with rows/s and the time left: a rich bar
    on a terminal, a plain line at most every few seconds elsewhere (logs, CI)."""

    EVERY = 5.0

    def __init__(self, title: str, total_rows: int, total_units: int) -> None:
        self.title, self.total, self.units = title, total_rows, total_units
        self.rows = self.done = 0
        self.started = self.shown = time.monotonic()
        self.counts = ""
        self.bar: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("rows {task.fields[rate]}"),
                                TimeRemainingColumn(), TextColumn("{task.fields[counts]}"),
                                console=Console(file=sys.stderr))
            self.task = self.bar.add_task(title, total=total_rows, rate="", counts="")

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif exc[0] is None and self.done:
            self.line()

    def rate(self) -> float:
        return self.rows / max(time.monotonic() - self.started, 1e-9)

    def advance(self, rows: int, counts: str) -> None:
        self.rows, self.done, self.counts = self.rows + rows, self.done + 1, counts
        if self.bar is not None:
            self.bar.update(self.task, completed=self.rows, counts=counts,
                            rate=f"{self.rate():,.0f}/s")
        elif time.monotonic() - self.shown >= self.EVERY:
            self.line()

    def line(self) -> None:
        self.shown = time.monotonic()
        rate = self.rate()
        left = (self.total - self.rows) / rate if rate > 0 else 0.0
        eta = time.strftime("%H:%M:%S", time.gmtime(left))
        print(f"{self.title}: {self.done}/{self.units} files, {self.rows}/{self.total} rows, "
              f"{rate:,.0f} rows/s, ETA {eta}; {self.counts}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)
