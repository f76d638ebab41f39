"""The Spark adapter: a lake's predictions folded where they live, by the service's own kernel,
and uploaded as bucket summaries (docs/scale.md, "Spark").

``summarize`` fetches the version's profile document (GET .../profile), shares it with the
executors (a broadcast), folds every partition with app/evaluation/fold.py inside
``mapInArrow`` (one merged summary per bucket and kind per partition), adds the partitions'
summaries up per bucket and kind in Spark (``applyInArrow``: the driver receives one row per
bucket and kind, however many partitions there were), merges them on the driver with
``fold.merge`` (exact), and uploads them through POST /v1/summaries.

Exactly once: every run of a job sends the same sequence (``sequence_of``: the model, the
version, the kind, and for drift the profile), so a retried or re-run job sends the same
(source, bucket, kind, sequence) and the service stores each bucket's summaries once, the
first upload's. Runs that carry other predictions for buckets already sent (files that landed
later, processed on their own) are told apart by a ``run`` number, or use another source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pyarrow as pa
from pyspark import Broadcast
from pyspark.errors import PySparkNotImplementedError
from pyspark.sql import DataFrame, SparkSession

from app.cli.client import ApiClient
from app.evaluation.fold import fold, from_profile_document, merge, upload_body
from app.evaluation.summaries import CompiledProfile, ModelShape
from app.spark.columns import kernel_frame
from app.storage.summaries import DRIFT, OUTCOME, SummaryRow

# the packed summary rows between the stages: one version (the job's), bucket start in epoch
# seconds (a Spark timestamp would come back in the session's time zone)
SCHEMA = "version string, bucket_start double, kind string, profile_key string, n long, " \
         "payload binary"
ARROW_SCHEMA = pa.schema([("version", pa.string()), ("bucket_start", pa.float64()),
                          ("kind", pa.string()), ("profile_key", pa.string()),
                          ("n", pa.int64()), ("payload", pa.binary())])
VERSION_ID = 0  # the kernel's id for the one version a job folds
FOLD_ROWS = 1 << 18  # rows gathered from a partition's Arrow batches before one fold
REQUEST_BYTES = 4 << 20  # base64 payload bytes in one upload (the service's limit is 10 MiB)
REQUEST_SUMMARIES = 2_000

# The compiled profile per executor process (a Python worker folds many partitions in turn).
_COMPILED: dict[tuple[str, str, str], tuple[ModelShape, CompiledProfile]] = {}


def compiled(doc: dict[str, Any]) -> tuple[ModelShape, CompiledProfile]:
    key = (doc["model"], doc["version"], doc["profile_key"])
    if key not in _COMPILED:
        _COMPILED.clear()
        _COMPILED[key] = from_profile_document(doc)
    return _COMPILED[key]


def to_arrow(version: str, rows: list[SummaryRow]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "version": [version] * len(rows),
        "bucket_start": [r.bucket_start.timestamp() for r in rows],
        "kind": [r.kind for r in rows], "profile_key": [r.profile_key for r in rows],
        "n": [r.n for r in rows], "payload": [r.payload for r in rows]}, schema=ARROW_SCHEMA)


def from_arrow(table: pa.Table | pa.RecordBatch) -> list[SummaryRow]:
    d = table.to_pydict()
    return [SummaryRow(VERSION_ID, datetime.fromtimestamp(b, UTC), k, p, n, bytes(payload))
            for b, k, p, n, payload in zip(d["bucket_start"], d["kind"], d["profile_key"],
                                           d["n"], d["payload"], strict=True)]


@dataclass(frozen=True)
class FoldPartition:
    """The function ``mapInArrow`` runs on each partition: its Arrow batches folded, in runs
    of at least ``fold_rows`` rows (the memory a task holds), and merged into one summary per
    bucket and kind."""

    shared: Any  # a Broadcast of the profile document, or the document itself
    fold_rows: int = FOLD_ROWS

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        doc = self.shared.value if isinstance(self.shared, Broadcast) else self.shared
        shape, cp = compiled(doc)
        rows: list[SummaryRow] = []
        pending: list[pa.RecordBatch] = []

        def flush() -> None:
            table = pa.Table.from_batches(pending)
            rows[:] = merge(rows + fold(shape, table, VERSION_ID, {VERSION_ID: cp},
                                        doc["bucket_seconds"]))
            pending.clear()

        held = 0
        for batch in batches:
            pending.append(batch)
            held += batch.num_rows
            if held >= self.fold_rows:
                flush()
                held = 0
        if pending:
            flush()
        if rows:
            yield to_arrow(doc["version"], rows)


def merge_group(table: pa.Table) -> pa.Table:
    """The function ``applyInArrow`` runs on the partial summaries of one bucket and kind."""
    rows = merge(from_arrow(table))
    version = table.column("version")[0].as_py()
    return pa.Table.from_batches([to_arrow(version, rows)])


def shared(session: SparkSession, value: Any) -> Any:
    """``value`` for the executors: a broadcast, or on Spark Connect the value itself (it
    travels in the plan)."""
    try:
        return session.sparkContext.broadcast(value)
    except PySparkNotImplementedError:
        return value


def merged(partial: DataFrame, value: Any) -> list[SummaryRow]:
    """The partial summaries (``SCHEMA``) added up per bucket and kind in Spark
    (``applyInArrow``: the driver receives one row per bucket and kind), merged on the
    driver; ``value`` (what ``shared`` gave) released after."""
    grouped = partial.groupBy("version", "bucket_start", "kind", "profile_key").applyInArrow(
        merge_group, SCHEMA)
    try:
        return merge(from_arrow(grouped.toArrow()))
    finally:
        if isinstance(value, Broadcast):
            value.destroy()


def fold_dataframe(doc: dict[str, Any], predictions: DataFrame,
                   labels: DataFrame | None = None, *,
                   columns: Mapping[str, str] | None = None,
                   label_columns: Mapping[str, str] | None = None,
                   dedupe: bool = True, fold_rows: int = FOLD_ROWS) -> list[SummaryRow]:
    """The predictions (with their labels) folded on ``doc`` (GET .../profile), merged: one
    summary row per bucket and kind, as ``fold.merge`` of ``fold.fold`` over all the rows
    would give."""
    shape, _ = from_profile_document(doc)
    frame = kernel_frame(predictions, labels, shape, columns=columns,
                         label_columns=label_columns, dedupe=dedupe)
    value = shared(predictions.sparkSession, doc)
    return merged(frame.mapInArrow(FoldPartition(value, fold_rows), SCHEMA), value)


# --------------------------------------------------------------------------- upload


def sequence_of(doc: dict[str, Any], kind: str, run: int | None = None) -> int:
    """The sequence of a job's uploads of ``kind``: the same for every run of the job over the
    version, whatever its data and partitioning, so each bucket and kind is stored once per
    source (the first upload wins); another for each ``run`` number the caller gives; and for
    drift another for each profile (a run after a new reference stores drift built on it)."""
    key = [doc["model"], doc["version"], doc["bucket_seconds"], kind,
           doc["profile_key"] if kind == DRIFT else None, run]
    digest = hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: the API's range


def _chunks(rows: list[SummaryRow]) -> Iterator[list[SummaryRow]]:
    chunk: list[SummaryRow] = []
    size = 0
    for r in rows:
        encoded = (len(r.payload) + 2) // 3 * 4
        if chunk and (size + encoded > REQUEST_BYTES or len(chunk) >= REQUEST_SUMMARIES):
            yield chunk
            chunk, size = [], 0
        chunk.append(r)
        size += encoded
    if chunk:
        yield chunk


@dataclass
class Summarized:
    """What a job summarised and what the service made of it."""

    rows: list[SummaryRow]
    sequences: dict[str, int] = field(default_factory=dict)  # kind -> sequence sent
    accepted: int = 0  # summaries stored by this run
    duplicates: int = 0  # summaries the service had already stored (a retry)
    predictions: int = 0  # predictions the accepted outcome summaries count


def upload(client: ApiClient, doc: dict[str, Any], rows: list[SummaryRow], *, source: str,
           run: int | None = None) -> Summarized:
    """``rows`` sent through POST /v1/summaries, each kind with its sequence (``sequence_of``),
    in requests within the service's body limit."""
    out = Summarized(rows)
    for kind in (OUTCOME, DRIFT):
        mine = [r for r in rows if r.kind == kind]
        if not mine:
            continue
        seq = sequence_of(doc, kind, run)
        out.sequences[kind] = seq
        for chunk in _chunks(mine):
            answer = client.post("/v1/summaries",
                                 upload_body(doc, chunk, source=source, sequence=seq))
            out.accepted += answer["accepted"]
            out.duplicates += answer["duplicates"]
            out.predictions += answer["predictions"]
    return out


def profile_of(client: ApiClient, model: str, version: str) -> dict[str, Any]:
    """The version's profile document (GET .../profile): what the executors fold with."""
    return client.get(f"/v1/models/{quote(model, safe='')}/versions/{quote(version, safe='')}"
                      "/profile")


def summarize(predictions: DataFrame, labels: DataFrame | None = None, *, model: str,
              version: str, source: str, url: str | None = None, token: str | None = None,
              columns: Mapping[str, str] | None = None,
              label_columns: Mapping[str, str] | None = None, run: int | None = None,
              dedupe: bool = True, retries: int = 5) -> Summarized:
    """Fold one version's predictions (and their late labels) in Spark and upload the
    summaries to the service at ``url`` (MODELMON_URL) with ``token`` (MODELMON_TOKEN; read
    and ingest scopes); see the module docstring and docs/scale.md."""
    client = ApiClient(url, token, retries=retries)
    doc = profile_of(client, model, version)
    rows = fold_dataframe(doc, predictions, labels, columns=columns,
                          label_columns=label_columns, dedupe=dedupe)
    return upload(client, doc, rows, source=source, run=run)
