"""`modelmon import FILE`: backfill predictions (or labels) from Parquet, CSV or JSON lines
through the API, in batches.

Re-running is always safe, because the API stores a record once per (model, prediction_id):
rows sent again are answered as duplicates and stored nothing twice. That is what makes an
import resumable after any interruption (Ctrl-C, a crash, a lost connection): run the same
command again. For large files, ``--state PATH`` also records how many rows the service has
confirmed, so that a re-run skips them instead of sending them again; a state file that does
not match the file (another row at the point where it stopped) is refused.

Rows are flat (one column per field) or, in JSON lines, the API's own records:

- predictions: ``prediction_id``, ``timestamp`` (ISO 8601), ``version`` (or ``--version``),
  one column per feature and per cohort key of the model, the prediction (``score``,
  ``value`` or ``probabilities``), optional ``predicted_label``, ``label``, ``latency_ms``;
- labels (``--labels``): ``prediction_id``, ``label``, ``timestamp``.

Other columns are ignored and named once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.cli import statefile
from app.cli.client import ApiClient, HttpError, add_connection_args, int_between
from app.cli.console import add_json
from app.cli.errors import CliError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".json": "jsonl"}
PREDICTION_COLUMN = {"binary_classification": "score", "regression": "value",
                     "multiclass_classification": "probabilities"}


@dataclass
class Layout:
    """Which column feeds which field of a record, from the model's registered schema."""

    model: dict[str, Any]
    labels: bool
    version: str | None

    @property
    def features(self) -> list[str]:
        return [f["name"] for f in self.model["features"]]

    @property
    def prediction(self) -> str:
        return PREDICTION_COLUMN[self.model["task"]]

    def known(self) -> set[str]:
        if self.labels:
            return {"prediction_id", "label", "timestamp"}
        return {"prediction_id", "timestamp", "version", self.prediction, "predicted_label",
                "label", "latency_ms", *self.features, *self.model["cohort_keys"]}

    def required(self) -> list[str]:
        if self.labels:
            return ["prediction_id", "label", "timestamp"]
        return ["prediction_id", "timestamp", self.prediction] + (
            [] if self.version else ["version"])

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        name = self.model["name"]
        if not self.labels and isinstance(row.get("prediction"), dict):  # the API's own shape
            rec = {**row, "model": name}
            if self.version and "version" not in rec:
                rec["version"] = self.version
            return rec
        rec = {"model": name, "prediction_id": _id(row.get("prediction_id")),
               "timestamp": _plain(row.get("timestamp"))}
        if self.labels:
            rec["label"] = _plain(row.get("label"))
            return rec
        rec["version"] = _plain(row.get("version")) or self.version
        rec["features"] = {f: _plain(row[f]) for f in self.features if f in row}
        rec["cohorts"] = {k: _plain(row[k]) for k in self.model["cohort_keys"] if k in row}
        value = _plain(row.get(self.prediction))
        if self.prediction == "probabilities" and isinstance(value, str):
            value = _json_object(value, "probabilities")
        prediction = {self.prediction: value}
        if _plain(row.get("predicted_label")) is not None:
            prediction["label"] = _plain(row["predicted_label"])
        rec["prediction"] = prediction
        for key in ("label", "latency_ms"):
            if _plain(row.get(key)) is not None:
                rec[key] = _plain(row[key])
        return rec


def _plain(v: Any) -> Any:
    """A JSON value: a missing number (NaN) as null, a time as ISO 8601, a map as an object."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, list) and all(isinstance(x, tuple) and len(x) == 2 for x in v):
        return dict(v)  # an Arrow map column
    return v


def _id(v: Any) -> Any:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _json_object(text: str, column: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise CliError(f"column {column!r} holds text that is not a JSON object") from None


@dataclass
class Source:
    """A file's rows in chunks; ``total`` when the format says it without reading."""

    columns: list[str]
    chunks: Iterator[list[dict[str, Any]]]
    total: int | None = None


def open_source(path: Path, fmt: str, layout: Layout, chunk: int) -> Source:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        return Source(pf.schema_arrow.names,
                      (b.to_pylist() for b in pf.iter_batches(batch_size=chunk)),
                      pf.metadata.num_rows)
    if fmt == "csv":
        import pyarrow as pa
        import pyarrow.csv as pcsv

        # text stays text (ids, categories, class labels, times); numbers are floats
        kinds = {f["name"]: f["type"] for f in layout.model["features"]}
        numeric = {n for n, k in kinds.items() if k == "numeric"} | {"score", "value",
                                                                      "latency_ms"}
        if layout.model["task"] == "regression":
            numeric.add("label")
        types = {c: pa.float64() if c in numeric else pa.string() for c in layout.known()}
        reader = pcsv.open_csv(path, convert_options=pcsv.ConvertOptions(
            column_types=types, strings_can_be_null=True))
        return Source(reader.schema.names, (b.to_pylist() for b in reader))
    return _jsonl(path, chunk)


def _jsonl(path: Path, chunk: int) -> Source:
    f = path.open("rb")
    number = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal number
        for line in f:
            number += 1
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise CliError(f"{path}: line {number} is not JSON") from None
            if not isinstance(row, dict):
                raise CliError(f"{path}: line {number} is not a JSON object")
            yield row

    it = rows()
    first = [r for _, r in zip(range(chunk), it, strict=False)]

    def chunks() -> Iterator[list[dict[str, Any]]]:
        try:
            batch = first
            while batch:
                yield batch
                batch = [r for _, r in zip(range(chunk), it, strict=False)]
        finally:
            f.close()

    columns = sorted({k for r in first for k in r})
    return Source(columns, chunks())


@dataclass
class State:
    """Rows confirmed stored, kept in ``--state`` after every batch (written atomically)."""

    path: Path | None
    key: dict[str, Any]
    rows_done: int = 0
    last_id: Any = None

    @classmethod
    def load(cls, path: Path | None, key: dict[str, Any]) -> State:
        state = cls(path, key)
        saved = statefile.load(path, key, "import")
        if saved is not None:
            try:
                state.rows_done, state.last_id = int(saved["rows_done"]), saved.get("last_id")
            except (KeyError, TypeError, ValueError):
                raise CliError(f"--state {path} is not a state file of modelmon import"
                               ) from None
        return state

    def save(self, rows_done: int, last_id: Any) -> None:
        self.rows_done, self.last_id = rows_done, last_id
        statefile.save(self.path, {"key": self.key, "rows_done": rows_done,
                                   "last_id": last_id})


@dataclass
class Totals:
    read: int = 0
    skipped: int = 0  # confirmed by an earlier run (--state)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, answer: dict[str, Any]) -> None:
        for k, v in answer.items():
            if isinstance(v, int):
                self.counts[k] = self.counts.get(k, 0) + v

    def describe(self, labels: bool) -> str:
        c = self.counts
        if labels:
            return (f"{c.get('matched', 0)} matched, {c.get('pending', 0)} waiting for their "
                    f"prediction, {c.get('duplicates', 0)} already stored")
        return f"{c.get('accepted', 0)} stored, {c.get('duplicates', 0)} already stored"


def send(api: ApiClient, path: str, records: list[dict[str, Any]], first_row: int,
         totals: Totals) -> None:
    """One batch; a batch over the service's size limits (413) is sent in halves."""
    try:
        totals.add(api.post(path, {"records": records}, compress=True))
    except HttpError as err:
        if err.status == 413 and len(records) > 1:
            half = len(records) // 2
            send(api, path, records[:half], first_row, totals)
            send(api, path, records[half:], first_row + half, totals)
            return
        rows = sorted({first_row + d["index"] for d in err.body.get("details") or []
                       if isinstance(d, dict) and isinstance(d.get("index"), int)})
        if rows:
            shown = ", ".join(str(r) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
            raise CliError(f"{err} -- in rows {shown} of the file (counting from 1)") from None
        raise


@dataclass
class Job:
    """An import checked before its first row is sent: the file readable, its columns those
    the model needs, the state file (if any) its own."""

    path: Path
    api: ApiClient
    layout: Layout
    source: Source
    kind: str
    state: State
    ignored: list[str]


def prepare(args: argparse.Namespace) -> Job:
    path = Path(args.file)
    if not path.exists():
        raise CliError(f"no file {path}")
    fmt = args.format or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CliError(f"cannot tell the format of {path.name} from its name: give --format "
                       "parquet, csv or jsonl", exit_code=2)
    api = ApiClient(args.url, args.token, retries=args.retries)
    model = api.get(f"/v1/models/{urllib.parse.quote(args.model, safe='')}")
    layout = Layout(model, args.labels, args.version)
    try:
        source = open_source(path, fmt, layout, args.batch_size)
    except CliError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever the reader says of a broken file
        raise CliError(f"cannot read {path} as {fmt}: {err}") from None
    api_shaped = fmt == "jsonl" and "prediction" in source.columns
    missing = [] if api_shaped else [c for c in layout.required() if c not in source.columns]
    if missing:
        raise CliError(f"{path.name} has no column {', '.join(missing)} (it has: "
                       f"{', '.join(source.columns) or 'none'})")
    ignored = sorted(set(source.columns) - layout.known()) if not api_shaped else []
    kind = "labels" if args.labels else "predictions"
    state = State.load(Path(args.state) if args.state else None,
                       {"file": str(path.resolve()), "model": args.model, "kind": kind})
    return Job(path, api, layout, source, kind, state, ignored)


def run(args: argparse.Namespace) -> int:
    job = prepare(args)
    totals = Totals()
    if job.ignored:
        print(f"ignoring columns: {', '.join(job.ignored)}", file=sys.stderr)
    progress = _progress_bar()
    task = progress.add_task(f"{job.kind} -> {args.model}", total=job.source.total, counts="")
    state, row = job.state, 0  # rows of the file read so far
    try:
        with progress:
            for chunk in job.source.chunks:
                start, row = row, row + len(chunk)
                if start < state.rows_done:  # confirmed by the run this state file records
                    done = min(row, state.rows_done) - start
                    if row >= state.rows_done and \
                            _id(chunk[done - 1].get("prediction_id")) != state.last_id:
                        raise CliError(f"--state {state.path} does not match {job.path.name}: "
                                       f"row {state.rows_done} is not the one it records; "
                                       "delete it to start over (sending rows again is safe)")
                    chunk, start = chunk[done:], start + done
                    totals.skipped += done
                    progress.update(task, completed=start)
                    if not chunk:
                        continue
                records = [job.layout.record(r) for r in chunk]
                try:
                    send(job.api, f"/v1/{job.kind}", records, start + 1, totals)
                except CliError as e:
                    raise CliError(f"{e}; {_resume(state)}") from None
                totals.read += len(chunk)
                state.save(row, records[-1].get("prediction_id"))
                progress.update(task, completed=row, counts=totals.describe(args.labels))
    except KeyboardInterrupt:
        raise CliError(f"interrupted; {_resume(state)}", exit_code=130) from None
    skipped = f", {totals.skipped} confirmed by an earlier run (--state)" if totals.skipped \
        else ""
    if args.json:
        print(json.dumps({"file": str(job.path), "kind": job.kind, "model": args.model,
                          "read": totals.read, "skipped": totals.skipped, **totals.counts}))
    else:
        print(f"{job.path.name}: {totals.read} {job.kind} sent to {args.model}: "
              f"{totals.describe(args.labels)}{skipped}")
    return 0


def _progress_bar() -> Any:
    """Rows sent of the file's rows (when its format tells them), on stderr."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from app.cli.console import console

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("rows"), TimeElapsedColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[counts]}"),
                    console=console(sys.stderr), transient=False)


def _resume(state: State) -> str:
    stored = f"rows 1-{state.rows_done} are stored" if state.rows_done else "nothing is stored"
    return (f"{stored}; run the same command again to go on (a record is never stored twice)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "import", help="backfill predictions or labels from Parquet, CSV or JSON lines",
        description="Send a file's predictions (or labels, with --labels) to the API in "
        "batches. Re-running is safe and resumes: records are stored once per prediction_id.")
    p.add_argument("file", help="a .parquet, .csv or .jsonl file")
    p.add_argument("--model", required=True, help="a registered model")
    p.add_argument("--version", help="the version of rows without a version column "
                   "(default: none: every row then needs its version column)")
    p.add_argument("--labels", action="store_true",
                   help="the file holds ground-truth labels (prediction_id, label, timestamp)")
    p.add_argument("--format", choices=["parquet", "csv", "jsonl"],
                   help="default: from the file name")
    p.add_argument("--batch-size", type=int_between(1, 10_000), default=1000,
                   help="records per request")
    p.add_argument("--state", help="a file recording the rows confirmed stored, so that a "
                   "re-run skips them instead of sending them again (default: no state file)")
    p.add_argument("--retries", type=int, default=8,
                   help="attempts per batch on connection errors, 429 and 5xx (default 8)")
    add_connection_args(p)
    add_json(p, "print the totals as one JSON object on stdout")
    p.set_defaults(func=run)
