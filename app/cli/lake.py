"""The lake side of `modelmon backfill`: a Parquet dataset (a local path or an fsspec URL,
hive partitions), the mapping of its columns onto the model's, and one unit of work (one
file of the dataset) read, joined with its late labels and folded by the service's kernel
(app/evaluation/fold.py, the same code as ingest).

Late labels come from a second dataset, joined by prediction id in DuckDB over the pyarrow
dataset: the labels are streamed past a hash table of the unit's ids, so they never need to
fit in memory, and DuckDB neither installs nor loads any extension (no download). A
prediction with several labels takes its earliest, as the service keeps the first label it
is sent; a label in the predictions' own file wins over a late one, as at ingest.

``fold_unit`` runs in the worker processes: picklable arguments in, summary rows out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from app.cli.errors import CliError
from app.errors import DomainError
from app.evaluation.fold import LABEL, LABEL_TIMESTAMP, TIMESTAMP, coded, fold, merge
from app.evaluation.summaries import CompiledProfile, ModelShape
from app.storage.summaries import SummaryRow

# rows folded at a time: bounds the kernel's temporaries, whatever the size of a file
SLICE = 262_144
PREDICTION = {"binary_classification": "score", "regression": "value",
              "multiclass_classification": "probabilities"}
# mapping key -> the column read when the mapping does not name one
DEFAULTS = {"id": "prediction_id", "timestamp": "timestamp", "version": "version",
            "label": "label", "label_timestamp": "label_timestamp",
            "labels.id": "prediction_id", "labels.label": "label",
            "labels.timestamp": "timestamp"}
OPTIONAL = ("version", "label", "label_timestamp")  # read when present, unless named
VERSION, ID = "__version", "__id"  # the kernel ignores other columns


# --------------------------------------------------------------------------- datasets


def open_dataset(where: str, what: str) -> tuple[ds.Dataset, str]:
    """The Parquet dataset at a local path or a URL (pyarrow's own filesystems, else fsspec),
    hive-partitioned directories read as columns; and its root, for naming its files."""
    try:
        if "://" in where and not where.startswith("file://"):
            fs, root = _filesystem(where)
        else:
            fs, root = None, str(Path(where.removeprefix("file://")).resolve())
            if not Path(root).exists():
                raise CliError(f"{what} {where}: no such file or directory")
        return ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive"), root
    except CliError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever the reader says of a broken dataset
        raise CliError(f"cannot read {what} {where} as a Parquet dataset: {err}") from None


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        return pa.fs.FileSystem.from_uri(url)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    try:
        import fsspec
    except ImportError:
        raise CliError(f"{url}: pyarrow cannot open this URL; install fsspec and the package "
                       "of its filesystem (e.g. s3fs, gcsfs, adlfs)") from None
    fs, root = fsspec.core.url_to_fs(url)
    return pa.fs.PyFileSystem(pa.fs.FSSpecHandler(fs)), root


def unit_name(fragment: ds.Fragment, root: str) -> str:
    """A file's path below the dataset's root: the name of its unit of work."""
    path = fragment.path
    return path[len(root):].lstrip("/") if path.startswith(root) else path


def sequence(name: str) -> int:
    """The unit's upload sequence: the same file gives the same number on every run."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


# --------------------------------------------------------------------------- mapping


def read_mapping(path: str | None, items: list[str],
                 known: Collection[str] = ()) -> dict[str, str | None]:
    """Mapping keys to columns: a JSON or YAML file (nested objects flatten with '.'), then
    ``--map key=column`` options over it (split by ``split_map`` against the ``known`` keys);
    an empty column means: not in the data."""
    out: dict[str, str | None] = {}
    if path:
        try:
            text = Path(path).read_text()
            if path.endswith((".yaml", ".yml")):
                import yaml

                doc = yaml.safe_load(text)
            else:
                doc = json.loads(text)
        except (OSError, ValueError, ImportError) as err:
            raise CliError(f"--mapping {path}: cannot read it as JSON or YAML ({err})") from None
        if not isinstance(doc, dict):
            raise CliError(f"--mapping {path}: must be an object of key: column")
        out.update(_flat(doc, "", path))
    for item in items:
        key, column = split_map(item, known)
        out[key] = column or None
    return out


def split_map(item: str, known: Collection[str]) -> tuple[str, str]:
    """``KEY=COLUMN`` cut at the '=' that ends a known key, so either side may hold '='
    (``features.a=b=col`` where the model has a feature ``a=b``, ``timestamp=event=time``);
    at the first '=' when no known key ends at one (an unknown key is named later)."""
    cuts = [i for i, ch in enumerate(item) if ch == "=" and item[:i].strip() in known]
    if len(cuts) > 1:
        keys = " and ".join(repr(item[:i].strip()) for i in cuts)
        raise CliError(f"--map {item!r}: {keys} are both keys of the model: name the column "
                       "in a --mapping file instead")
    cut = cuts[0] if cuts else item.find("=")
    if cut < 1 or not item[:cut].strip():
        raise CliError(f"--map {item!r}: must be key=column (e.g. timestamp=event_time)")
    return item[:cut].strip(), item[cut + 1:].strip()


def mapping_keys(model: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The mapping keys of a model: those of the predictions dataset, those of the labels'."""
    keys = ["timestamp", "prediction", *OPTIONAL, "id"]
    keys += [f"features.{f['name']}" for f in model["features"]]
    keys += [f"cohorts.{k}" for k in model["cohort_keys"]]
    return keys, ["labels.id", "labels.label", "labels.timestamp"]


def _flat(doc: dict[str, Any], prefix: str, path: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}.", path))
        elif v is None or isinstance(v, str):
            out[prefix + str(k)] = v or None
        else:
            raise CliError(f"--mapping {path}: {prefix}{k} must name a column, not {v!r}")
    return out


def resolve(given: dict[str, str | None], model: dict[str, Any], schema: pa.Schema,
            labels_schema: pa.Schema | None) -> dict[str, str | None]:
    """Every mapping key of the model with its column (None: not in the data), checked
    against the datasets' columns; unknown keys and missing columns are named."""
    keys, label_keys = mapping_keys(model)
    unknown = sorted(set(given) - set(keys) - set(label_keys))
    if unknown:
        raise CliError(f"unknown mapping key {', '.join(unknown)} (known: "
                       f"{', '.join(keys + label_keys)})")
    out: dict[str, str | None] = {}
    for key in keys + (label_keys if labels_schema is not None else []):
        default = DEFAULTS.get(key) or (PREDICTION[model["task"]] if key == "prediction"
                                        else key.split(".", 1)[1])
        column = given.get(key, default)
        names = (labels_schema if key.startswith("labels.") else schema).names
        if key not in given and (key in OPTIONAL or key == "id") and column not in names:
            column = None  # an optional column the data does not have
        out[key] = column
    missing = [f"{k} (column {c!r})" for k, c in out.items() if c is not None and c not in (
        labels_schema if k.startswith("labels.") else schema).names]
    if labels_schema is not None and out["id"] is None:
        missing.append("id (the prediction id the labels are joined by)")
    if out["timestamp"] is None or out["prediction"] is None:
        missing.append("timestamp and prediction are required")
    if missing:
        raise CliError(f"the dataset has no column for {'; '.join(missing)}: map it with "
                       "--map key=column (key= for a feature or cohort not in the data)")
    return out


def projection(mapping: dict[str, str | None], task: str) -> dict[str, ds.Expression]:
    """The kernel's columns (fold.py's contract) read from the dataset's."""
    out = {}
    for key, column in mapping.items():
        if column is None or key.startswith("labels."):
            continue
        name = {"timestamp": TIMESTAMP, "prediction": PREDICTION[task], "version": VERSION,
                "id": ID, "label": LABEL, "label_timestamp": LABEL_TIMESTAMP}.get(
            key, key.split(".", 1)[-1])
        out[name] = ds.field(column)
    return out


def time_filter(schema: pa.Schema, column: str, start: datetime | None,
                end: datetime | None) -> ds.Expression | None:
    """start <= timestamp < end, in the column's own type, so the dataset prunes by it."""
    kind = schema.field(column).type
    bounds = []
    for at, op in ((start, "ge"), (end, "lt")):
        if at is None:
            continue
        if pa.types.is_timestamp(kind):
            value = pa.scalar(at if kind.tz else at.astimezone(UTC).replace(tzinfo=None),
                              type=kind)
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            value = pa.scalar(at.timestamp())
        else:
            raise CliError(f"column {column!r} must be a timestamp or epoch seconds to filter "
                           f"by time, not {kind}")
        bounds.append(ds.field(column) >= value if op == "ge" else ds.field(column) < value)
    if not bounds:
        return None
    return bounds[0] if len(bounds) == 1 else bounds[0] & bounds[1]


# --------------------------------------------------------------------------- one unit


@dataclass(frozen=True)
class Labels:
    where: str  # the labels dataset, opened once per worker process
    id: str
    label: str
    timestamp: str
    lag_seconds: float | None = None  # labels searched up to this long after the unit's end


@dataclass(frozen=True)
class Unit:
    name: str
    fragment: ds.Fragment
    schema: pa.Schema
    columns: dict[str, ds.Expression]
    filter: ds.Expression | None
    task: str
    docs: dict[str, dict[str, Any]]  # version -> its profile document (profile None: none)
    version: str | None = None  # every row's version, without a version column
    labels: Labels | None = None


@dataclass
class Folded:
    name: str
    rows: int
    summaries: dict[str, list[SummaryRow]] = field(default_factory=dict)  # per version


def fold_unit(unit: Unit) -> Folded:
    """A file's predictions (with their late labels) as merged summary rows per version; a
    failure is a CliError naming the file (it crosses the process boundary intact)."""
    try:
        return _fold_unit(unit)
    except CliError:
        raise
    except DomainError as err:
        shown = "; ".join(f"{d.field}: {d.problem}" if d.field else d.problem
                          for d in err.details[:3])
        raise CliError(f"{unit.name}: {err.message}" + (f" ({shown})" if shown else "")
                       ) from None
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CliError(f"{unit.name}: cannot be read or summarised: {err}") from None


def _fold_unit(unit: Unit) -> Folded:
    table = ds.Scanner.from_fragment(unit.fragment, schema=unit.schema, columns=unit.columns,
                                     filter=unit.filter).to_table()
    if unit.labels is not None and table.num_rows:
        table = with_labels(table, unit.labels)
    out = Folded(unit.name, table.num_rows)
    for version, part in _by_version(table, unit):
        doc = unit.docs[version]
        shape, cp = compiled(doc)
        rows: list[SummaryRow] = []
        for at in range(0, part.num_rows, SLICE):
            rows += fold(shape, part.slice(at, SLICE), 0, {} if cp is None else {0: cp},
                         doc["bucket_seconds"])
        out.summaries[version] = merge(rows)
    return out


def _by_version(table: pa.Table, unit: Unit) -> list[tuple[str, pa.Table]]:
    if VERSION not in table.column_names:
        return [(str(unit.version), table)] if table.num_rows else []
    c = coded(table.column(VERSION).combine_chunks(), table.num_rows)
    if (c.row_code < 0).any():
        raise CliError(f"{unit.name}: the version column has empty values")
    return [(v, table.take(pa.array(np.flatnonzero(c.row_code == i))))
            for i, v in enumerate(c.keys)]


_COMPILED: dict[tuple[str, str, str | None], tuple[ModelShape, CompiledProfile | None]] = {}


def compiled(doc: dict[str, Any]) -> tuple[ModelShape, CompiledProfile | None]:
    """The version's shape and compiled profile (None: outcome summaries only), once per
    process and profile."""
    key = (doc["model"], doc["version"], doc.get("profile_key"))
    if key not in _COMPILED:
        shape = ModelShape(doc["task"], tuple((f["name"], f["type"]) for f in doc["features"]),
                           tuple(doc["cohort_keys"]), tuple(doc["classes"]))
        cp = (None if doc.get("profile") is None
              else CompiledProfile.compile(doc["profile"], doc["profile_key"]))
        _COMPILED[key] = (shape, cp)
    return _COMPILED[key]


_LABELS: dict[str, ds.Dataset] = {}


def with_labels(table: pa.Table, labels: Labels) -> pa.Table:
    """The unit's rows with their late labels (label, label_timestamp), joined by id."""
    import duckdb

    if labels.where not in _LABELS:
        _LABELS[labels.where] = open_dataset(labels.where, "--labels")[0]
    dataset, n = _LABELS[labels.where], table.num_rows
    ts = seconds(table.column(TIMESTAMP))
    scanner = dataset.scanner(
        columns={"id": ds.field(labels.id), "label": ds.field(labels.label),
                 "ts": ds.field(labels.timestamp)},
        filter=_lag_filter(dataset.schema, labels, ts))
    ids = pa.table({"r": pa.array(np.arange(n)), "id": pc.cast(table.column(ID), pa.string())})
    con = duckdb.connect()
    try:
        con.execute("SET autoinstall_known_extensions=false; "
                    "SET autoload_known_extensions=false")
        con.register("p", ids)
        con.register("l", scanner)
        got = con.sql("SELECT p.r, arg_min(l.label, l.ts) AS label, min(l.ts) AS ts FROM p "
                      "JOIN l ON p.id = CAST(l.id AS VARCHAR) WHERE l.label IS NOT NULL "
                      "AND l.ts IS NOT NULL GROUP BY p.r").to_arrow_table()
    finally:
        con.close()
    at = np.full(n, -1, dtype=np.int64)
    at[got.column("r").to_numpy()] = np.arange(got.num_rows)
    pick = pa.array(at, mask=at < 0)
    late, late_ts = got.column("label").take(pick), seconds(got.column("ts")).take(pick)
    return _combined(table, late, late_ts, ts)


def _combined(table: pa.Table, late: pa.Array, late_ts: pa.Array, ts: pa.Array) -> pa.Table:
    """A label in the file wins (its time: label_timestamp, else the prediction's); else
    the late one."""
    if LABEL in table.column_names:
        inline = table.column(LABEL).combine_chunks()
        late = pc.cast(late, inline.type) if late.type != inline.type else late
        own_ts = (seconds(table.column(LABEL_TIMESTAMP)) if LABEL_TIMESTAMP in
                  table.column_names else ts)
        has = pc.is_valid(inline)
        label = pc.if_else(has, inline, late)
        label_ts = pc.if_else(has, pc.coalesce(own_ts, ts), late_ts)
    else:
        label, label_ts = late, late_ts
    table = table.drop_columns([c for c in (LABEL, LABEL_TIMESTAMP) if c in table.column_names])
    return table.append_column(LABEL, label).append_column(LABEL_TIMESTAMP, label_ts)


def seconds(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A time column (Arrow timestamp, naive meaning UTC, or epoch seconds) as float
    seconds since the epoch, nulls kept."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_timestamp(arr.type):
        us = pc.cast(pc.cast(arr, pa.timestamp("us", arr.type.tz)), pa.int64())
        return pc.divide(pc.cast(us, pa.float64()), 1e6)
    return pc.cast(arr, pa.float64())


def _lag_filter(schema: pa.Schema, labels: Labels, ts: pa.Array) -> ds.Expression | None:
    if labels.lag_seconds is None or len(ts) == 0:
        return None
    lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
    return time_filter(schema, labels.timestamp, datetime.fromtimestamp(lo, UTC),
                       datetime.fromtimestamp(hi + labels.lag_seconds + 1e-6, UTC))
