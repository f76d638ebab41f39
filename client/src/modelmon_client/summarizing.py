"""``SummarizingMonitor``: a model server that sends summaries, never its inputs.

Predictions are folded where they are made, by the service's own kernel
(``app.evaluation.fold``, from the ``modelmon`` package: ``pip install
'modelmon-client[summaries]'``), into the exact per-bucket summaries the service monitors
(POST /v1/summaries: predictions counted, drift counts per bin and slot of the version's
reference profile). No feature value ever leaves the process.

Labels are paired by the service (``thin_rows=True``, the default): each prediction is also
sent as a thin outcome row (POST /v1/predictions, ``"summarized": true``: its id, time,
version, prediction and cohorts, never its features), and each label as a label
(POST /v1/labels), so that a label arriving later, or through another process, is paired
like any, once. With ``thin_rows=False`` nothing but summaries leaves the process (no
prediction id, no single prediction or label), and a label is paired only here: with a
prediction this process logged within ``label_horizon`` seconds.

- ``log`` appends to a buffer (never waits on the network; past ``max_buffer`` records not
  yet folded, as while the model's profile cannot be fetched, a record is dropped and counted
  in ``stats.dropped``). A background thread folds the
  buffer every ``flush_interval`` seconds on the version's profile (fetched from the service,
  and fetched again when the service says a new reference replaced it), writes the upload to
  the spool directory, sends it, and removes it once the service acknowledged it.
- An upload is stored once however often it is sent (its source and sequence are in the spooled
  body), so a retry, or a restart that finds the spool not empty, never counts twice.
  ``flush()`` returns once everything logged before it is spooled (durable) and sent.
- ``label`` queues the label for the service (thin rows), or pairs it with a prediction this
  process logged within ``label_horizon`` seconds (kept in memory: its time, prediction and
  cohorts) and sends the pair's sums (``thin_rows=False``; a label for a prediction this
  process no longer holds is then not sent: ``stats.labels_unpaired``).
- Until the version has a reference, predictions are counted and pairs summed (outcome
  summaries), and drift starts with the first flush after the reference is uploaded.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelmon_client import _http, _wire
from modelmon_client._sender import RETRY_STATUSES

log = logging.getLogger("modelmon_client.summaries")


@dataclass
class SummaryStats:
    logged: int = 0
    uploads: int = 0
    summaries_sent: int = 0
    labels_paired: int = 0
    labels_unpaired: int = 0
    profile_refetches: int = 0
    failed_attempts: int = 0
    dropped: int = 0  # predictions not summarised: unusable (logged), or past max_buffer
    thin_rows_sent: int = 0  # thin outcome rows acknowledged (stored, or stored already)
    labels_sent: int = 0  # labels acknowledged by the service (thin rows)
    labels_dropped: int = 0  # labels not sent (thin rows): past max_buffer, or unusable


def _epoch(ts: Any) -> datetime:
    if ts is None:
        return datetime.now(UTC)
    if isinstance(ts, datetime):
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    if isinstance(ts, str):
        d = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return d if d.tzinfo else d.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(ts), UTC)


class SummarizingMonitor:
    def __init__(self, url: str | None = None, *, model: str, version: str,
                 token: str | None = None, source: str | None = None,
                 spool_dir: str | os.PathLike[str] | None = None,
                 flush_interval: float = 10.0, label_horizon: float = 86_400.0,
                 max_recent: int = 1_000_000, max_buffer: int = 1_000_000,
                 timeout: float = 30.0, backoff_max: float = 30.0,
                 thin_rows: bool = True, batch_records: int = 1000) -> None:
        from app.evaluation import fold  # the service's kernel: the same code, not a copy

        self._fold = fold
        self.url = url or os.environ.get("MODELMON_URL") or "http://127.0.0.1:8000"
        self.model, self.version = model, version
        self._token = token if token is not None else os.environ.get("MODELMON_TOKEN")
        self.source = source or f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
        self.spool = Path(spool_dir) if spool_dir else Path(tempfile.mkdtemp(
            prefix="modelmon-spool-"))
        self.spool.mkdir(parents=True, exist_ok=True)
        self.flush_interval, self.label_horizon = flush_interval, label_horizon
        self._timeout, self._backoff_max = timeout, backoff_max
        self._max_recent, self._max_buffer = max_recent, max_buffer
        self.thin_rows, self._batch_records = thin_rows, batch_records
        self.stats = SummaryStats()
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._pairs: list[dict[str, Any]] = []
        self._labels: list[dict[str, Any]] = []  # thin rows: labels for the service
        self._recent: OrderedDict[str, tuple[datetime, dict[str, Any], dict[str, Any]]] = \
            OrderedDict()
        self._doc: dict[str, Any] | None = None
        self._shape: Any = None
        self._cp: Any = None
        self._last_sequence = 0
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="modelmon-summaries",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close, 5.0)  # at exit: what is not sent by then stays spooled

    # -- the caller's side: never waits on the network ----------------------------------

    def log(self, *, features: Mapping[str, Any], prediction: Any,
            prediction_id: str | None = None, cohorts: Mapping[str, Any] | None = None,
            label: Any = None, timestamp: Any = None) -> str:
        """Buffer one prediction; returns its id (for ``label``, here or in another process
        when ``prediction_id`` is the caller's), sent only in its thin row."""
        pid = str(uuid.uuid4()) if prediction_id is None else str(prediction_id)
        ts = _epoch(timestamp)
        rec = {"prediction_id": pid, "timestamp": ts,
               "features": _wire.missing_as_none(features),
               "cohorts": dict(cohorts or {}),
               "prediction": _wire.plain(prediction) if hasattr(prediction, "tolist")
               else prediction}
        if label is not None:  # shaped with the model's task in the background thread
            rec["label"], rec["label_timestamp"] = label, ts
        with self._lock:
            if len(self._records) >= self._max_buffer:  # nothing can be folded (the model
                self.stats.dropped += 1  # is unknown to the service, or never reached)
                return pid
            self._records.append(rec)
            if not self.thin_rows:
                self._recent[pid] = (ts, rec["prediction"], rec["cohorts"])
                while len(self._recent) > self._max_recent:
                    self._recent.popitem(last=False)
            self.stats.logged += 1
        return pid

    def label(self, prediction_id: str, label: Any, *, timestamp: Any = None) -> bool:
        """The ground truth of a prediction. Thin rows: queued for the service, which pairs
        it with the prediction whichever process logged it, once (False only past
        ``max_buffer`` labels not sent yet). Else paired with a prediction this process
        logged; False when it no longer holds it (past ``label_horizon`` or ``max_recent``)."""
        now = _epoch(timestamp)
        if self.thin_rows:
            with self._lock:
                if len(self._labels) >= self._max_buffer:
                    self.stats.labels_dropped += 1
                    return False
                self._labels.append({"prediction_id": str(prediction_id), "label": label,
                                     "label_timestamp": now})
            return True
        with self._lock:
            held = self._recent.pop(str(prediction_id), None)
            if held is None or (now - held[0]).total_seconds() > self.label_horizon:
                self.stats.labels_unpaired += 1
                return False
            ts, prediction, cohorts = held
            self._pairs.append({"timestamp": ts, "features": {}, "cohorts": cohorts,
                                "prediction": prediction, "label": label,
                                "label_timestamp": now})
            self.stats.labels_paired += 1
        return True

    def _shaped(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Predictions and labels shaped by the model's task, as the service reads them."""
        doc = self._doc
        assert doc is not None
        info = _wire.ModelInfo(doc["task"], tuple(doc["classes"]) or None)
        numeric = [f["name"] for f in doc["features"] if f["type"] == "numeric"]
        out = []
        for r in records:
            bad = [k for k in numeric if not isinstance(r["features"].get(k, 0.0),
                                                        int | float | type(None))]
            try:
                if bad:
                    raise _wire.Unsendable(f"numeric features {bad} are not numbers")
                r = {**r, "prediction": _wire.payload(r["prediction"], info)}
            except _wire.Unsendable as exc:
                log.warning("a prediction was dropped: %s", exc)
                self.stats.dropped += 1
                continue
            if r.get("label") is not None:
                r["label"] = _label_value(r["label"], info.task)
            out.append(r)
        return out

    def flush(self, timeout: float | None = None) -> bool:
        """Fold what was logged, spool it and send the spool; True once the buffer and the
        spool are empty (the service acknowledged everything), False after ``timeout``
        seconds (what was logged is then spooled, and sent when the service is back)."""
        self._wake.set()
        with self._idle:
            return self._idle.wait_for(self._settled, timeout)

    def _settled(self) -> bool:
        with self._lock:
            buffered = bool(self._records or self._pairs or self._labels)
        return not buffered and not any(self.spool.glob("*.json"))

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush (up to ``timeout`` seconds) and stop; what could not be sent stays spooled
        and is sent by the next monitor on the same spool directory."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        self._thread.join(5)

    def __enter__(self) -> SummarizingMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the background thread ------------------------------------------------------------

    def _run(self) -> None:
        wait = 0.0
        while not self._closed:
            self._wake.wait(wait or self.flush_interval)
            self._wake.clear()
            try:
                done = self._tick()
            except Exception:  # the thread must live on; the work is retried
                log.exception("folding or sending summaries failed; retrying")
                done = False
            if done:
                wait = 0.0
            else:
                self.stats.failed_attempts += 1
                wait = min(self._backoff_max, max(0.2, wait * 2))
            with self._idle:
                self._idle.notify_all()

    def _tick(self) -> bool:
        """Fold and spool what was logged, then send the spool; True when all was sent."""
        if self._doc is None or self._doc["profile"] is None:
            try:  # a reference may have been uploaded meanwhile
                self._refresh_profile()
            except _http.ModelmonError:
                if self._doc is None:
                    return False  # nothing can be folded before the model is known
        with self._lock:
            records, self._records = self._records, []
            pairs, self._pairs = self._pairs, []
            labels, self._labels = self._labels, []
        if records or pairs or labels:
            self._spool(records, pairs, labels)
        return self._send_spooled()

    def _refresh_profile(self) -> None:
        """The version's profile document (profile null while it has no reference)."""
        doc = self._call("GET", _http.model_path(self.model, "versions", self.version,
                                                 "profile"))
        if self._doc is None or doc["profile_key"] != self._doc["profile_key"]:
            self._shape, self._cp = self._fold.from_profile_document(doc)
            self._doc = doc

    def _rows(self, doc: dict[str, Any], records: list[dict[str, Any]],
              pairs: list[dict[str, Any]]) -> list[Any]:
        f = self._fold
        profiles = {} if self._cp is None else {0: self._cp}
        rows = []
        if records:
            rows += f.fold(self._shape, f.arrow_from_records(self._shape, records), 0,
                           profiles, doc["bucket_seconds"])
        if pairs:
            rows += f.fold_pairs(self._shape, f.arrow_from_records(self._shape, pairs), 0,
                                 doc["bucket_seconds"])
        return f.merge(rows)

    def _next_sequence(self) -> int:
        seq = max(time.time_ns() // 1000, self._last_sequence + 1)
        self._last_sequence = seq
        return seq

    def _spool(self, records: list[dict[str, Any]], pairs: list[dict[str, Any]],
               labels: list[dict[str, Any]]) -> None:
        """One spool file for all that was taken from the buffers, written whole (fsync, then
        rename) or not at all: a crash never keeps a fold without its thin rows. It holds the
        summaries' upload and, with thin rows, the batches of thin rows and of labels."""
        doc = self._doc
        assert doc is not None
        records = self._shaped(records)
        folded = [{k: v for k, v in r.items() if k not in ("label", "label_timestamp")}
                  for r in records] if self.thin_rows else records  # labels: the service's
        rows = self._rows(doc, folded, self._shaped(pairs))
        seq = self._next_sequence()
        spooled = {"upload": self._fold.upload_body(doc, rows, source=self.source,
                                                    sequence=seq) if rows else None,
                   "predictions": [], "labels": []}
        if self.thin_rows:
            n = self._batch_records
            thin = [_thin_row(self.model, self.version, r) for r in records]
            marks = [m for m in map(self._label_record, labels) if m is not None]
            spooled["predictions"] = [thin[i:i + n] for i in range(0, len(thin), n)]
            spooled["labels"] = [marks[i:i + n] for i in range(0, len(marks), n)]
        _write(self.spool / f"{seq:020d}.json", spooled, durable=True)

    def _label_record(self, r: dict[str, Any]) -> dict[str, Any] | None:
        """A label as POST /v1/labels reads it; None (dropped, counted) when it is no label
        of the model's task."""
        assert self._doc is not None
        try:
            label = _label_value(r["label"], self._doc["task"])
        except (TypeError, ValueError) as exc:
            log.warning("a label was dropped: %s", exc)
            self.stats.labels_dropped += 1
            return None
        return {"model": self.model, "prediction_id": r["prediction_id"], "label": label,
                "timestamp": r["label_timestamp"].isoformat()}

    def _send_spooled(self) -> bool:
        for path in sorted(self.spool.glob("*.json")):
            if not self._send_file(path):
                return False
        return True

    def _send_file(self, path: Path) -> bool:
        """One attempt at the parts of a spool file not acknowledged yet, in order (the
        summaries, the thin rows, the labels); False when the service could not be reached.
        Each part is stored once however often it is sent."""
        spooled = json.loads(path.read_text())
        if "upload" not in spooled:  # spooled by an earlier release: the upload alone
            spooled = {"upload": spooled, "predictions": [], "labels": []}
        if spooled["upload"] is not None:
            if not self._send_upload(path, spooled["upload"]):
                return False
            spooled["upload"] = None
            _write(path, spooled)
        for kind, post in (("predictions", self._post_thin), ("labels", self._post_labels)):
            while spooled[kind]:
                if not self._attempt(path, kind, spooled[kind][0], post):
                    return False
                spooled[kind].pop(0)
                _write(path, spooled)
        path.unlink()
        return True

    def _send_upload(self, path: Path, body: dict[str, Any]) -> bool:
        try:
            self._call("POST", "/v1/summaries", json_body=body)
        except _http.ModelmonError as exc:
            if exc.status in RETRY_STATUSES or exc.status == 0:
                return False
            if exc.code != "stale_profile":  # refused for good: kept aside, with the reason
                _refused(path, "summaries", body, exc)
                return True
            # Built on a profile a new reference replaced: the predictions are counted,
            # their drift is not (the rows are gone); later folds use the new profile.
            self.stats.profile_refetches += 1
            body["summaries"] = [s for s in body["summaries"] if s["kind"] != "drift"]
            body["profile"] = None
            self._refresh_profile()
            return self._send_upload(path, body) if body["summaries"] else True
        self.stats.uploads += 1
        self.stats.summaries_sent += len(body["summaries"])
        return True

    def _attempt(self, path: Path, kind: str, records: list[dict[str, Any]],
                 post: Callable[[list[dict[str, Any]]], None]) -> bool:
        """One batch of thin rows or labels; False when the service could not be reached."""
        try:
            post(records)
        except _http.ModelmonError as exc:
            if exc.status in RETRY_STATUSES or exc.status == 0:
                return False
            _refused(path, kind, records, exc)
        return True

    def _post_thin(self, records: list[dict[str, Any]]) -> None:
        self._call("POST", "/v1/predictions", json_body={"summarized": True,
                                                          "records": records})
        self.stats.thin_rows_sent += len(records)

    def _post_labels(self, records: list[dict[str, Any]]) -> None:
        self._call("POST", "/v1/labels", json_body={"records": records})
        self.stats.labels_sent += len(records)

    def _call(self, method: str, path: str, json_body: Any = None) -> Any:
        return _http.call(self.url, self._token, method, path, json_body=json_body,
                          timeout=self._timeout, ok=(200, 201))


def _label_value(label: Any, task: str) -> Any:
    """A label as the service reads it: a float for regression, a class as its string."""
    if hasattr(label, "item"):
        label = label.item()
    if task == "regression":
        return float(label)
    return str(label) if isinstance(label, int) and not isinstance(label, bool) else label


def _thin_row(model: str, version: str, r: dict[str, Any]) -> dict[str, Any]:
    """A shaped record as a thin outcome row: everything but its features."""
    row = {"model": model, "version": version, "prediction_id": r["prediction_id"],
           "timestamp": r["timestamp"].isoformat(), "prediction": r["prediction"]}
    if r["cohorts"]:
        row["cohorts"] = _wire.missing_as_none(r["cohorts"])
    if r.get("label") is not None:
        row["label"] = r["label"]
    return row


def _write(path: Path, doc: Any, durable: bool = False) -> None:
    """Replace ``path`` with ``doc`` whole (rename); ``durable``: on disk before the rename.
    A rewrite after a part was acknowledged need not be: lost, the part is sent again, and
    stored once."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, default=_wire.plain)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _refused(path: Path, kind: str, doc: Any, exc: Exception) -> None:
    """A part the service refused for good, kept aside beside the spool with the reason."""
    aside = path.parent / f"{path.stem}.{kind}.{uuid.uuid4().hex[:8]}.refused"
    log.error("%s refused by the service, kept in %s: %s", kind, aside, exc)
    aside.write_text(json.dumps({"error": str(exc), "body": doc}, default=_wire.plain))
