"""`modelmon backfill DATASET --model M`: months of predictions in a data lake (Parquet, hive
partitions, local or behind an fsspec URL) summarised where they lie and sent as bucket
summaries (POST /v1/summaries), not record by record. docs/scale.md documents it.

Each file of the dataset is a unit of work: read (the time range pushed down to the
dataset), joined with its late labels (app/cli/lake.py), folded by the service's kernel in a
process pool, merged, and uploaded under the run's source id with a sequence number that
depends on the file alone. The service stores a (source, version, bucket, kind, sequence)
once, so a run killed at any point and started again re-sends the same summaries and counts
nothing twice; ``--state`` also records the files the service acknowledged, which a re-run
skips. The source id defaults to one derived from the datasets and the mapping, so the same
command is the same source.

Each version found in the data is summarised on its own reference profile, fetched from the
service; a version without one sends outcome summaries only (calibration, cohorts, labels),
and says so. A profile that changes during the run (a 409) is fetched again: the buckets
already sent on the old one stay, the rest are summarised on the new one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli import statefile
from app.cli.client import ApiClient, HttpError, add_connection_args, int_between
from app.cli.console import add_json
from app.cli.errors import CliError

if TYPE_CHECKING:  # imported where used: pyarrow, pandas and scipy would slow every command
    from app.cli import lake

DEFAULT_BUCKET_SECONDS = 300.0  # the service's default MODELMON_JOB_INTERVAL_SECONDS


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """A backfill checked before its first upload: datasets readable, columns mapped, every
    version's profile fetched, the state file (if any) its own."""

    args: argparse.Namespace
    api: ApiClient
    model: dict[str, Any]
    root: str
    schema: Any
    mapping: dict[str, str | None]
    units: list[Surveyed]
    docs: dict[str, dict[str, Any]]
    source: str
    state: State
    filter: Any = None
    labels: lake.Labels | None = None


@dataclass(frozen=True)
class Surveyed:
    name: str
    fragment: Any
    rows: int
    versions: tuple[str, ...]


def prepare(args: argparse.Namespace) -> Plan:
    from app.cli import lake

    api = ApiClient(args.url, args.token, retries=args.retries)
    model = api.get(f"/v1/models/{_q(args.model)}")
    versions = versions_of(api, model)
    dataset, root = lake.open_dataset(args.dataset, "dataset")
    labels_schema = None
    if args.labels:
        labels_schema = lake.open_dataset(args.labels, "--labels")[0].schema
    every = _all_features(model, versions)
    keys, label_keys = lake.mapping_keys(every)
    given = lake.read_mapping(args.mapping, args.map or [], {*keys, *label_keys})
    if args.version and "version" not in given:
        given["version"] = None  # --version names every row's version
    elif args.version and given["version"]:
        raise CliError("give --version or a version column (--map version=...), not both")
    mapping = lake.resolve(given, every, dataset.schema, labels_schema)
    if mapping["version"] is None and not args.version:
        raise CliError("the dataset has no version column: give --version, or map one with "
                       "--map version=column")
    start, end = _when(args.start, "--start"), _when(args.end, "--end")
    filt = lake.time_filter(dataset.schema, mapping["timestamp"], start, end)
    units = survey(dataset, root, mapping, filt, args.version)
    docs = profiles(api, model, versions, sorted({v for u in units for v in u.versions}),
                    args.bucket_seconds)
    _check_aligned(docs, start, end)
    labels = None if not args.labels else lake.Labels(
        args.labels, str(mapping["labels.id"]), str(mapping["labels.label"]),
        str(mapping["labels.timestamp"]), args.label_lag)
    source = args.source or default_source(args, root, mapping)
    key = {"source": source, "model": model["name"], "dataset": root,
           "start": args.start, "end": args.end}
    state = State.load(Path(args.state) if args.state else None, key)
    return Plan(args, api, model, root, dataset.schema, mapping, units, docs, source, state,
                filt, labels)


def versions_of(api: ApiClient, model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["version"]: v for v in api.get(f"/v1/models/{_q(model['name'])}/versions")}


def _all_features(model: dict[str, Any], versions: dict[str, dict[str, Any]]
                  ) -> dict[str, Any]:
    """The model with every feature of any of its versions (a version may have its own)."""
    seen = {f["name"]: f for f in model["features"]}
    for v in versions.values():
        for f in v.get("features") or []:
            seen.setdefault(f["name"], f)
    return {**model, "features": list(seen.values())}


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-11-01 or "
                       "2026-11-01T00:00:00Z)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _check_aligned(docs: dict[str, dict[str, Any]], *times: datetime | None) -> None:
    """A range boundary inside a bucket would make a file's summary of that bucket depend on
    the range, and a later run over a wider range could not recognise it as sent."""
    step = next(iter(docs.values()))["bucket_seconds"] if docs else DEFAULT_BUCKET_SECONDS
    for at in times:
        if at is not None and at.timestamp() % step:
            raise CliError(f"--start and --end must fall on bucket boundaries (multiples of "
                           f"{step:g} s since the epoch), not {at.isoformat()}")


def survey(dataset: Any, root: str, mapping: dict[str, str | None], filt: Any,
           version: str | None) -> list[Surveyed]:
    """Every file's rows in the range and the versions they hold: the total the progress
    counts towards, and the profiles to fetch before the first fold."""
    import pyarrow.dataset as ds

    from app.cli import lake
    from app.evaluation.fold import coded

    out = []
    column = mapping["version"]
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        name = lake.unit_name(fragment, root)
        try:
            if column is None:
                rows = fragment.count_rows(filter=filt)
                versions = (str(version),) if rows else ()
            else:
                table = ds.Scanner.from_fragment(
                    fragment, schema=dataset.schema, columns=[column], filter=filt).to_table()
                rows = table.num_rows
                versions = coded(table.column(column).combine_chunks(), rows).keys
        except Exception as err:  # noqa: BLE001 - whatever the reader says of a broken file
            raise CliError(f"cannot read {name}: {err}") from None
        out.append(Surveyed(name, fragment, rows, tuple(versions)))
    return out


def profiles(api: ApiClient, model: dict[str, Any], versions: dict[str, dict[str, Any]],
             names: list[str], bucket_seconds: float | None) -> dict[str, dict[str, Any]]:
    """Each version's profile document; a version without a reference gets one of its shape
    alone (outcome summaries only), and the user is told."""
    missing = [v for v in names if v not in versions]
    if missing:
        raise CliError(f"the data names versions {', '.join(missing[:10])} that {model['name']!r}"
                       " does not have: register them first")
    docs = {}
    for v in names:
        docs[v] = fetch_profile(api, model, versions[v], bucket_seconds)
    steps = {d["bucket_seconds"] for d in docs.values() if d["profile"] is not None}
    step = steps.pop() if len(steps) == 1 else bucket_seconds or DEFAULT_BUCKET_SECONDS
    for v, d in docs.items():
        if d["profile"] is None:
            d["bucket_seconds"] = step
            print(f"note: version {v} has no reference profile: only its outcome summaries "
                  "(calibration, cohorts, labels) are sent, not its drift; upload its "
                  "reference and run the backfill again to add them", file=sys.stderr)
    return docs


def fetch_profile(api: ApiClient, model: dict[str, Any], version: dict[str, Any],
                  bucket_seconds: float | None) -> dict[str, Any]:
    try:
        return api.get(f"/v1/models/{_q(model['name'])}/versions/{_q(version['version'])}"
                       "/profile")
    except HttpError as err:
        if err.status != 404 or err.body.get("code") != "no_profile":
            raise
    return {"model": model["name"], "version": version["version"], "task": model["task"],
            "features": version.get("features") or model["features"],
            "cohort_keys": model["cohort_keys"], "classes": model.get("classes") or [],
            "bucket_seconds": bucket_seconds or DEFAULT_BUCKET_SECONDS,
            "profile_key": None, "profile": None}


def default_source(args: argparse.Namespace, root: str, mapping: dict[str, Any]) -> str:
    """The same datasets read the same way are the same source: a re-run is recognised. The
    time range is not part of it (its boundaries fall on buckets), so overlapping ranges
    are recognised too."""
    what = {"dataset": root, "labels": args.labels, "mapping": mapping,
            "version": args.version, "label_lag": args.label_lag}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(root.rstrip("/")).name)[:60] or "lake"
    return f"backfill-{stem}-{digest}"


# --------------------------------------------------------------------------- state


@dataclass
class State:
    """Files the service acknowledged, kept in ``--state`` after each (written atomically),
    with the profile each version's drift was summarised on (None: outcome only)."""

    path: Path | None
    key: dict[str, Any]
    done: dict[str, dict[str, str | None]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None, key: dict[str, Any]) -> State:
        state = cls(path, key)
        saved = statefile.load(path, key, "backfill", " (summaries sent again are never "
                               "counted twice)")
        if saved is not None:
            try:
                state.done = {str(k): dict(v) for k, v in saved["done"].items()}
            except (AttributeError, KeyError, TypeError, ValueError):
                raise CliError(f"--state {path} is not a state file of modelmon backfill"
                               ) from None
        return state

    def skips(self, unit: Surveyed, docs: dict[str, dict[str, Any]]) -> bool:
        """Acknowledged before, unless a version has a profile now and had none then (its
        drift is still to send)."""
        sent = self.done.get(unit.name)
        return sent is not None and all(
            sent.get(v) is not None or docs[v]["profile_key"] is None for v in unit.versions)

    def save(self, name: str, profiles: dict[str, str | None]) -> None:
        self.done[name] = profiles
        statefile.save(self.path, {"key": self.key, "done": self.done})


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    from app.cli.lake_run import Progress, Runner

    plan = prepare(args)
    todo = [u for u in plan.units if u.rows and not plan.state.skips(u, plan.docs)]
    skipped = len([u for u in plan.units if u.rows]) - len(todo)
    progress = Progress(f"backfill {plan.model['name']}", sum(u.rows for u in todo),
                        len(todo))
    runner = Runner(plan, progress)
    try:
        with progress:
            runner.run(todo)
    except KeyboardInterrupt:
        raise CliError(f"interrupted; {runner.resume()}", exit_code=130) from None
    except CliError as err:
        raise CliError(f"{err}; {runner.resume()}") from None
    t = runner.totals
    confirmed = f", {skipped} files confirmed by an earlier run (--state)" if skipped else ""
    if args.json:
        print(json.dumps({"dataset": str(plan.root), "model": plan.model["name"],
                          "source": plan.source, "rows": t.rows, "files": t.units,
                          "accepted": t.accepted, "duplicates": t.duplicates,
                          "predictions": t.predictions, "files_confirmed_before": skipped}))
        return 0
    print(f"{Path(plan.root).name}: {t.rows} predictions in {t.units} files summarised for "
          f"{plan.model['name']} (source {plan.source}): {t.accepted} summaries stored, "
          f"{t.duplicates} already stored, {t.predictions} predictions counted{confirmed}")
    return 0


def _duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError("must be a duration such as 3600, 90m, 12h or 7d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "backfill", help="summarise a Parquet dataset of predictions and send the summaries",
        description="Summarise a Parquet dataset (local path or fsspec URL, hive partitions) "
        "with the service's own kernel and send bucket summaries (POST /v1/summaries). "
        "Re-running is safe and resumes: nothing is counted twice. Needs modelmon[lake] for "
        "--labels.")
    p.add_argument("dataset", help="a Parquet file or directory, or a URL (s3://, gs://, ...)")
    p.add_argument("--model", required=True, help="a registered model")
    p.add_argument("--version", help="every row's version, when the data has no version "
                   "column (default: the data's version column)")
    p.add_argument("--labels", metavar="DATASET", help="a Parquet dataset of late labels, "
                   "joined by prediction id (columns prediction_id, label, timestamp unless "
                   "mapped as labels.id, labels.label, labels.timestamp; default: none, outcomes "
                   "only from a label column of the predictions)")
    p.add_argument("--label-lag", type=_duration, metavar="DURATION", help="look for a file's "
                   "labels only from its first prediction to its last plus this (e.g. 30d): "
                   "the labels dataset is then read by time range; default: the whole labels "
                   "dataset for every file)")
    p.add_argument("--map", action="append", metavar="KEY=COLUMN", help="the column of a "
                   "key: id, timestamp, version, prediction, label, label_timestamp, "
                   "features.NAME, cohorts.KEY, labels.id, labels.label, labels.timestamp "
                   "(default: the column of the same name; KEY= when it is not in the data; "
                   "cut after the model's key, so a name may hold '=')")
    p.add_argument("--mapping", metavar="FILE",
                   help="the same keys in a JSON or YAML file (default: none)")
    p.add_argument("--start", help="first time summarised (ISO 8601, on a bucket boundary; "
                   "default: the data's first)")
    p.add_argument("--end", help="end of the range, excluded (ISO 8601, on a bucket "
                   "boundary; default: after the data's last)")
    p.add_argument("--workers", type=int_between(1, 256), default=os.cpu_count() or 1,
                   help="processes folding files (default: the machine's cores)")
    p.add_argument("--source", help="the producer id of the uploads (default: derived from "
                   "the datasets and the mapping, the same on every run)")
    p.add_argument("--state", help="a file recording the files the service acknowledged, "
                   "so that a re-run skips them instead of sending them again (default: no state "
                   "file)")
    p.add_argument("--bucket-seconds", type=float, help="the service's bucket length, needed "
                   "only when no version has a reference profile (default 300)")
    p.add_argument("--retries", type=int, default=8,
                   help="attempts per upload on connection errors, 429 and 5xx (default 8)")
    add_connection_args(p)
    add_json(p, "print the totals as one JSON object on stdout")
    p.set_defaults(func=run)
