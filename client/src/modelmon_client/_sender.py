"""The buffer between the caller and the service, and the thread that empties it.

``put`` is the only thing a caller's thread does: one lock, one append. The sender thread
wakes when a batch is full, when the oldest records have waited ``flush_interval``, on
``flush`` and on ``close``; it encodes each record once, posts batches (gzip), retries what
may succeed later and hands what the service refuses to ``on_refused``.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelmon_client import _wire
from modelmon_client._http import CONNECTION_ERRORS, Connection, Response, model_path

log = logging.getLogger("modelmon_client")

PREDICTION, LABEL = 0, 1  # an entry's first item
# Worth sending again unchanged: the service or a proxy in front of it was overloaded, down
# or too slow; 408 is a body that arrived too slowly, as it does when this process stalls.
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
# Refusals that name the records at fault by their index in the batch; the rest is sent again.
NAMING_STATUSES = frozenset({403, 404, 422})
GZIP_MIN_BYTES = 1024


@dataclass(frozen=True)
class Refused:
    """A record the service will not store, and why. ``record`` is what was sent (or, for a
    record the client could not encode, what was logged); ``status`` is 0 when the client
    refused it itself; ``problems`` are the service's ``{"field", "problem"}`` for it."""

    record: dict[str, Any]
    status: int
    code: str
    problems: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Stats:
    """Counts since the monitor was made (records unless said otherwise).

    queued: accepted by ``log``/``label`` into the buffer; sent: acknowledged by the service
    (of which ``duplicates`` it had already stored: resends after a lost answer); dropped:
    never sent: the buffer was full, the monitor was closed, or still unsent when ``close``
    gave up; refused: refused by the service (or unencodable), see ``on_refused``; retried:
    requests sent again after a transient failure; pending: in the buffer or being sent.
    """

    queued: int
    sent: int
    duplicates: int
    dropped: int
    refused: int
    retried: int
    pending: int
    last_error: str | None


def log_refused(refused: list[Refused]) -> None:
    """The default ``on_refused``: a warning naming the fields, never the values."""
    first = refused[0]
    where = "; ".join(f"{p.get('field', '')}: {p.get('problem', '')}"
                      for r in refused[:3] for p in r.problems[:2])
    log.warning("modelmon refused %d record(s) (%s %s): %s", len(refused), first.status,
                first.code, where or "no details")


def _problems_by_index(details: list[Any], n: int) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for d in details:
        if isinstance(d, dict) and isinstance(d.get("index"), int) and 0 <= d["index"] < n:
            out.setdefault(d["index"], []).append(
                {k: v for k, v in d.items() if k != "index"})
    return out


class Sender:
    def __init__(self, *, connect: Callable[[], Connection], model: str, version: str,
                 info: _wire.ModelInfo | None, max_queue: int, batch_size: int,
                 max_batch_bytes: int, flush_interval: float, backoff_base: float,
                 backoff_max: float, gzip_level: int,
                 on_refused: Callable[[list[Refused]], None]) -> None:
        self.model, self.version, self.info = model, version, info
        self._connect = connect
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._max_batch_bytes = max_batch_bytes
        self._flush_interval = flush_interval
        self._backoff_base, self._backoff_max = backoff_base, backoff_max
        self._gzip_level = gzip_level
        self._on_refused = on_refused
        self._reset()

    def _reset(self) -> None:
        """Fresh state and a new thread: at start, and in a child after fork (the parent
        keeps sending what it had; the child starts empty)."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._abort = threading.Event()
        self._items: list[tuple[Any, ...]] = []
        self._inflight = 0
        self._accepting = True
        self._stopping = False
        self._queued = self._dropped = self._settled = 0
        self._sent = self._duplicates = self._refused = self._retried = 0
        self.last_error: str | None = None
        self._conn = self._connect()
        self._thread = threading.Thread(target=self._run, name="modelmon-client-sender",
                                        daemon=True)
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------

    def put(self, entry: tuple[Any, ...]) -> bool:
        with self._lock:
            if self._accepting and len(self._items) + self._inflight < self._max_queue:
                self._items.append(entry)
                self._queued += 1
                if len(self._items) == self._batch_size:
                    self._wake.set()
                return True
            self._dropped += 1
            dropped = self._dropped
        if dropped & (dropped - 1) == 0:  # 1, 2, 4, 8, ...: visible, never a flood
            log.warning("modelmon client dropped %d record(s) so far: %s", dropped,
                        "the monitor is closed" if not self._accepting else
                        f"the buffer of {self._max_queue} records is full")
        return False

    def put_many(self, entries: list[tuple[Any, ...]]) -> int:
        """Enqueue as many as fit; the rest are dropped and counted. Returns how many fit."""
        with self._lock:
            room = self._max_queue - len(self._items) - self._inflight if self._accepting else 0
            taken = entries[:max(0, room)]
            before = len(self._items)
            self._items.extend(taken)
            self._queued += len(taken)
            self._dropped += len(entries) - len(taken)
            if before < self._batch_size <= len(self._items):
                self._wake.set()
        if len(taken) < len(entries):
            log.warning("modelmon client dropped %d record(s): the buffer is full or closed",
                        len(entries) - len(taken))
        return len(taken)

    def stats(self) -> Stats:
        with self._lock:
            return Stats(queued=self._queued, sent=self._sent, duplicates=self._duplicates,
                         dropped=self._dropped, refused=self._refused, retried=self._retried,
                         pending=len(self._items) + self._inflight, last_error=self.last_error)

    def flush(self, timeout: float | None) -> bool:
        """Until every record queued before the call is acknowledged, refused or dropped.
        From the sender thread itself (an ``on_refused`` callback) it cannot wait: False."""
        if threading.current_thread() is self._thread:
            return False
        with self._cond:
            target = self._queued
            self._wake.set()
            return self._cond.wait_for(lambda: self._settled >= target, timeout)

    def close(self, timeout: float | None) -> bool:
        """Stop accepting, send what is left within ``timeout``, then give up the rest
        (counted as dropped) and stop the thread."""
        with self._lock:
            self._accepting = False
            self._stopping = True
        done = self.flush(timeout)
        if not done:
            self._abort.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=None if done else 5.0)
        self._conn.close()
        return done

    # -- the sender thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            with self._lock:
                items, self._items = self._items, []
                upto = self._queued
                self._inflight = len(items)
                stopping = self._stopping
            try:
                if items:
                    self._deliver(items)
            except Exception:  # a bug here must not end the thread and with it all logging
                log.exception("modelmon client: %d record(s) lost to an unexpected error",
                              self._inflight)
                with self._lock:
                    self._dropped += self._inflight
            with self._cond:
                self._inflight = 0
                self._settled = upto
                self._cond.notify_all()
                if stopping and not self._items:
                    return

    def _deliver(self, items: list[tuple[Any, ...]]) -> None:
        predictions = [e for e in items if e[0] == PREDICTION]
        labels = [e for e in items if e[0] == LABEL]
        if predictions:  # first, so that labels of the same cycle find their predictions
            self._post_all("/v1/predictions", self._encode(predictions))
        if labels:
            self._post_all("/v1/labels", self._encode(labels))

    def _encode(self, entries: list[tuple[Any, ...]]) -> list[bytes]:
        info = self.info
        if info is None and entries[0][0] == PREDICTION \
                and any(_wire.needs_info(e[4]) for e in entries):
            info = self._learn_info()
        out, refused = [], []
        for e in entries:
            try:
                out.append(_wire.encode_prediction(self.model, self.version, e, info)
                           if e[0] == PREDICTION else _wire.encode_label(self.model, e))
            except (TypeError, ValueError) as exc:
                refused.append(Refused(self._as_logged(e), 0, "unsendable",
                                       [{"problem": str(exc)}]))
        if refused:
            self._settle_refused(refused)
        return out

    def _as_logged(self, e: tuple[Any, ...]) -> dict[str, Any]:
        if e[0] == LABEL:
            return {"model": self.model, "prediction_id": e[1], "label": e[2], "timestamp": e[3]}
        keys = ("prediction_id", "timestamp", "features", "prediction", "cohorts", "label",
                "latency_ms")
        return {"model": self.model, "version": self.version, **dict(zip(keys, e[1:], strict=True))}

    def _learn_info(self) -> _wire.ModelInfo | None:
        """The model's task and classes from the service, for bare predictions; None (those
        records are then refused locally) when the token may not read the model or it is
        unknown. Transient failures are retried like any request."""
        attempt = 0
        while not self._abort.is_set():
            try:
                resp = self._conn.request("GET", model_path(self.model))
            except CONNECTION_ERRORS as exc:
                self._wait_to_retry(attempt, None, f"{type(exc).__name__}: {exc}")
                attempt += 1
                continue
            if resp.status in RETRY_STATUSES:
                self._wait_to_retry(attempt, resp.retry_after(), self._describe(resp))
                attempt += 1
                continue
            body = resp.json()
            if resp.status == 200 and isinstance(body, dict) and body.get("task") in _wire.TASKS:
                classes = body.get("classes")
                self.info = _wire.ModelInfo(body["task"],
                                            tuple(classes) if classes is not None else None)
                return self.info
            self.last_error = f"reading model {self.model!r}: {self._describe(resp)}"
            return None
        return None

    def _chunks(self, parts: list[bytes]) -> list[list[bytes]]:
        chunks: list[list[bytes]] = []
        cur: list[bytes] = []
        size = 0
        for p in parts:
            if cur and (len(cur) >= self._batch_size or size + len(p) > self._max_batch_bytes):
                chunks.append(cur)
                cur, size = [], 0
            cur.append(p)
            size += len(p) + 1
        if cur:
            chunks.append(cur)
        return chunks

    def _post_all(self, path: str, parts: list[bytes]) -> None:
        for chunk in self._chunks(parts):
            self._post(path, chunk)
            with self._lock:
                self._inflight -= len(chunk)

    def _post(self, path: str, chunk: list[bytes]) -> None:
        """One batch until it is settled: acknowledged, refused (whole or record by record,
        the rest sent again at once), split on 413, or given up when ``close`` runs out of
        time. Transient failures wait (Retry-After, else exponential backoff with jitter)."""
        stack = [chunk]
        while stack:
            part = stack.pop()
            attempt = 0
            while part:
                if self._abort.is_set():
                    with self._lock:
                        self._dropped += len(part)
                    break
                body = _wire.batch_body(part)
                headers = {"Content-Type": "application/json"}
                if len(body) >= GZIP_MIN_BYTES:
                    body = gzip.compress(body, compresslevel=self._gzip_level, mtime=0)
                    headers["Content-Encoding"] = "gzip"
                try:
                    resp = self._conn.request("POST", path, body, headers)
                except CONNECTION_ERRORS as exc:
                    self._wait_to_retry(attempt, None, f"{type(exc).__name__}: {exc}")
                    attempt += 1
                    continue
                if resp.status == 200:
                    self._acknowledged(len(part), resp)
                    break
                if resp.status in RETRY_STATUSES:
                    self._wait_to_retry(attempt, resp.retry_after(), self._describe(resp))
                    attempt += 1
                    continue
                if resp.status == 413 and len(part) > 1:
                    self.last_error = self._describe(resp)
                    half = len(part) // 2
                    stack += [part[half:], part[:half]]
                    break
                part = self._refused_by(resp, part)

    def _refused_by(self, resp: Response, part: list[bytes]) -> list[bytes]:
        """Settle the records a refusal names and return the others, to be sent again; a
        refusal naming none refuses the whole batch."""
        err = resp.error()
        self.last_error = self._describe(resp)
        named = (_problems_by_index(err.details, len(part))
                 if resp.status in NAMING_STATUSES else {})
        if not named:
            whole = [{k: v for k, v in d.items() if k != "index"} for d in err.details
                     if isinstance(d, dict)] or [{"problem": err.message}]
            named = dict.fromkeys(range(len(part)), whole)
        self._settle_refused([Refused(json.loads(part[i]), resp.status, err.code, problems)
                              for i, problems in sorted(named.items())])
        return [p for i, p in enumerate(part) if i not in named]

    def _settle_refused(self, refused: list[Refused]) -> None:
        with self._lock:
            self._refused += len(refused)
        try:
            self._on_refused(refused)
        except Exception:
            log.exception("modelmon client: on_refused raised")

    def _acknowledged(self, n: int, resp: Response) -> None:
        body = resp.json()
        dupes = body.get("duplicates", 0) if isinstance(body, dict) else 0
        with self._lock:
            self._sent += n
            self._duplicates += dupes if isinstance(dupes, int) else 0

    @staticmethod
    def _describe(resp: Response) -> str:
        err = resp.error()
        return f"{resp.status} {err.code}: {err.message}"[:300]

    def _wait_to_retry(self, attempt: int, retry_after: float | None, why: str) -> None:
        """Retry-After when the service gave one (plus up to 10% so that many clients do not
        come back at once), otherwise base * 2^attempt capped, half of it jittered."""
        self.last_error = why
        with self._lock:
            self._retried += 1
        if retry_after is not None:
            delay = retry_after * (1 + 0.1 * random.random())
        else:
            delay = min(self._backoff_max, self._backoff_base * 2 ** min(attempt, 30))
            delay *= 0.5 + 0.5 * random.random()
        self._abort.wait(delay)
