"""``Monitor``: log predictions and labels from a model server without ever waiting on the
network, and register the model it serves."""

from __future__ import annotations

import atexit
import io
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from time import time
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

from modelmon_client import _http, _wire
from modelmon_client._sender import LABEL, PREDICTION, Refused, Sender, Stats, log_refused

DEFAULT_URL = "http://127.0.0.1:8000"
_open: weakref.WeakSet[Monitor] = weakref.WeakSet()


class Monitor:
    """Sends a model's inference logs to a modelmon service from a background thread.

    ``log`` and ``label`` only append to a bounded buffer (when it is full the record is
    dropped and counted in ``stats.dropped``: the caller is never stalled). A sender thread
    posts batches of up to ``batch_size`` records, at least every ``flush_interval`` seconds,
    gzip-compressed; it retries connection errors, 408, 429, 502, 503 and 504 (after
    ``Retry-After``, else with exponential backoff and jitter) for as long as the monitor is
    open; records the service refuses are handed to ``on_refused`` and the rest of their batch
    is sent again. Every record carries a ``prediction_id`` (a uuid4 unless given) and is
    resent unchanged, so a retry never stores a record twice.

    ``url`` and ``token`` default to the ``MODELMON_URL`` and ``MODELMON_TOKEN`` environment
    variables. ``task`` and ``classes`` are needed only to log bare predictions (a number, a
    ``predict_proba`` row); without them the sender reads them from the service once (which
    needs a token with the ``read`` scope) or takes them from ``register_*`` on this monitor.
    The buffer is flushed at interpreter exit (up to ``exit_timeout`` seconds).
    """

    def __init__(self, url: str | None = None, *, model: str, version: str,
                 token: str | None = None, task: str | None = None,
                 classes: Sequence[Any] | None = None, max_queue: int = 100_000,
                 batch_size: int = 1000, flush_interval: float = 1.0,
                 max_batch_bytes: int = 4 << 20, timeout: float = 10.0,
                 backoff_base: float = 0.5, backoff_max: float = 30.0, gzip_level: int = 1,
                 on_refused: Callable[[list[Refused]], None] | None = None,
                 exit_timeout: float = 5.0) -> None:
        if task is not None and task not in _wire.TASKS:
            raise ValueError(f"task must be one of {', '.join(_wire.TASKS)}")
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch_size must be within 1..10000 (the service's batch limit)")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.url = url or os.environ.get("MODELMON_URL") or DEFAULT_URL
        self.model, self.version = model, version
        self._token = token if token is not None else os.environ.get("MODELMON_TOKEN")
        self._timeout = timeout
        self.exit_timeout = exit_timeout
        _http.Connection(self.url, token=None, timeout=timeout)  # refuse a bad url now
        info = _wire.ModelInfo(task, _classes(classes)) if task is not None else None
        self._sender = Sender(
            connect=lambda: _http.Connection(self.url, token=self._token, timeout=timeout),
            model=model, version=version, info=info, max_queue=max_queue,
            batch_size=batch_size, max_batch_bytes=max_batch_bytes,
            flush_interval=flush_interval, backoff_base=backoff_base,
            backoff_max=backoff_max, gzip_level=gzip_level,
            on_refused=on_refused or log_refused)
        self._closed = False
        _open.add(self)

    # -- logging: never waits ----------------------------------------------------------

    def log(self, *, features: Mapping[str, Any], prediction: Any,
            prediction_id: str | None = None, cohorts: Mapping[str, Any] | None = None,
            label: Any = None, latency_ms: float | None = None,
            timestamp: datetime | str | float | None = None) -> str:
        """Queue one prediction and return its ``prediction_id`` (for ``label`` later).

        ``prediction`` is the service's payload (``{"score": 0.9, "label": "fraud"}``,
        ``{"probabilities": {...}}``, ``{"value": 3.2}``) or a bare value shaped by the task:
        a number (binary: the positive class's probability; regression: the value), a
        ``predict_proba`` row, or a ``{class: probability}`` mapping. NaN features are sent as
        missing. ``timestamp`` defaults to now; a number is epoch seconds.
        """
        pid = str(uuid4()) if prediction_id is None else str(prediction_id)
        if hasattr(prediction, "tolist"):
            prediction = prediction.tolist()
        self._sender.put((PREDICTION, pid, time() if timestamp is None else timestamp,
                          dict(features), prediction, dict(cohorts) if cohorts else None,
                          label, latency_ms))
        return pid

    def label(self, prediction_id: str, label: Any, *,
              timestamp: datetime | str | float | None = None) -> None:
        """Queue the ground truth of an earlier prediction (it may arrive before it, too)."""
        self._sender.put((LABEL, str(prediction_id), label,
                          time() if timestamp is None else timestamp))

    def log_batch(self, features: Any, *, predictions: Any,
                  feature_names: Sequence[str] | None = None, cohorts: Any = None,
                  labels: Any = None, prediction_ids: Sequence[str] | None = None,
                  latency_ms: Any = None, timestamp: Any = None) -> list[str]:
        """Queue a whole batch: ``features`` a pandas DataFrame, a 2-D numpy array with
        ``feature_names``, or a list of mappings; ``predictions`` one per row (an array of
        scores or values, a ``predict_proba`` matrix, a DataFrame of class probabilities or a
        list of payloads); ``cohorts`` a DataFrame, a mapping of columns or a list of
        mappings; ``labels``, ``latency_ms`` and ``timestamp`` one per row or one for all.
        Returns the prediction ids; what does not fit in the buffer is dropped and counted."""
        from modelmon_client.arrays import batch_entries

        entries = batch_entries(features, predictions=predictions, feature_names=feature_names,
                                cohorts=cohorts, labels=labels, prediction_ids=prediction_ids,
                                latency_ms=latency_ms, timestamp=timestamp)
        self._sender.put_many(entries)
        return [e[1] for e in entries]

    def label_batch(self, prediction_ids: Iterable[str], labels: Iterable[Any], *,
                    timestamp: datetime | str | float | None = None) -> None:
        ts = time() if timestamp is None else timestamp
        from modelmon_client.arrays import as_list
        self._sender.put_many([(LABEL, str(p), lab, ts) for p, lab in
                               zip(as_list(prediction_ids), as_list(labels), strict=True)])

    @property
    def stats(self) -> Stats:
        return self._sender.stats()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued before this call is acknowledged, refused or
        dropped; False when ``timeout`` seconds passed first."""
        return self._sender.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush (up to ``timeout`` seconds), then stop; records still unsent are counted as
        dropped. Later ``log`` calls are dropped and counted. Returns whether all were sent."""
        if self._closed:
            return True
        self._closed = True
        _open.discard(self)
        return self._sender.close(timeout)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def export_metrics(self, registry: Any = None) -> None:
        """Publish ``stats`` as ``modelmon_client_*`` Prometheus metrics in ``registry``
        (prometheus_client's default registry when None). Needs prometheus_client."""
        from modelmon_client.prometheus import export

        export(self, registry)

    # -- registration: blocking calls, for start-up and pipelines ------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return _http.call(self.url, self._token, method, path,
                          timeout=max(self._timeout, 30.0), **kwargs)

    def register_model(self, *, task: str, features: Sequence[str] | Mapping[str, str],
                       categorical: Iterable[str] = (), cohort_keys: Sequence[str] = (),
                       classes: Sequence[Any] | None = None,
                       policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Register (or confirm, when identical) this monitor's model; ``features`` are names
        (numeric unless listed in ``categorical``) or a ``{name: "numeric"|"categorical"}``
        mapping; ``policy`` overrides the service's thresholds and alerting for the model
        (the service's docs/policy.md; omitted, a stored policy stands). Raises
        ModelmonError (409 when registered with another definition)."""
        if task not in _wire.TASKS:
            raise ValueError(f"task must be one of {', '.join(_wire.TASKS)}")
        cats = set(categorical)
        kinds = (dict(features) if isinstance(features, Mapping) else
                 {str(f): "categorical" if f in cats else "numeric" for f in features})
        body: dict[str, Any] = {
            "name": self.model, "task": task,
            "features": [{"name": n, "type": t} for n, t in kinds.items()],
            "cohort_keys": list(cohort_keys),
        }
        cls = _classes(classes)
        if cls is not None:
            body["classes"] = list(cls)
        if policy is not None:
            body["policy"] = dict(policy)
        answer = self._call("POST", "/v1/models", json_body=body)
        self._sender.info = _wire.ModelInfo(task, tuple(answer.get("classes") or ()) or None)
        return answer

    def register_version(self, *, metadata: Mapping[str, Any] | None = None,
                         created_at: datetime | str | None = None,
                         maintenance_seconds: float | None = None) -> dict[str, Any]:
        """Register this monitor's version with its metadata (``regularization``: ``{type:
        l1|l2|elastic_net|none, lambda, l1_ratio}``, ``hyperparameters``, ``artifact_bytes``);
        ``maintenance_seconds`` opens a maintenance window of the model for that long, so
        the rollout's drift, calibration and cohort findings make tickets, not pages."""
        body: dict[str, Any] = {"version": self.version, "metadata": dict(metadata or {})}
        if created_at is not None:
            body["created_at"] = _wire.timestamp(created_at)
        if maintenance_seconds is not None:
            body["maintenance_seconds"] = maintenance_seconds
        return self._call("POST", _http.model_path(self.model, "versions"), json_body=body)

    def set_training(self, training: Mapping[str, Any]) -> dict[str, Any]:
        """Replace this version's training figures (``train_loss``, ``validation_loss``,
        ``penalty_loss``, ``validation_error``, ``validation_ece``, ``cohort_validation_error``
        as ``{"key=value": error}``, ``cohort_validation_rows`` as ``{"key=value": rows}``,
        ``train_rows``, ``validation_rows``, ``parameters``,
        ``nonzero_parameters``): the service's generalization gap compares production with
        them. Refused (409 ``version_in_use``) once a prediction of the version is stored."""
        return self._call("PATCH", _http.model_path(self.model, "versions", self.version),
                          json_body={"training": dict(training)})

    def upload_weights(self, weights: Mapping[str, Any] | bytes | str | os.PathLike[str], *,
                       feature_tensor: str | None = None, feature_axis: int | None = None,
                       replace: bool = False) -> dict[str, Any]:
        """Upload this version's weights: ``{tensor name: array}`` (sent as .npz; needs
        numpy), the bytes of a .npz or .safetensors file, or its path. ``feature_tensor`` and
        ``feature_axis`` name the tensor axis indexed by the model's features, for the
        service's per-feature weights and importance (not needed for the tensors
        register_sklearn uploads). Once a prediction of the version is stored, different
        weights are refused (409 ``version_in_use``) unless ``replace=True`` (audited)."""
        if isinstance(weights, Mapping):
            import numpy as np

            buf = io.BytesIO()
            np.savez(buf, **{k: np.asarray(v) for k, v in weights.items()})
            data = buf.getvalue()
        elif isinstance(weights, bytes):
            data = weights
        else:
            with open(weights, "rb") as f:
                data = f.read()
        path = _http.model_path(self.model, "versions", self.version, "weights")
        query = {k: v for k, v in (("feature_tensor", feature_tensor),
                                   ("feature_axis", feature_axis),
                                   ("replace", "true" if replace else None)) if v is not None}
        if query:
            path += "?" + urlencode(query)
        return self._call("POST", path, body=data, content_type="application/octet-stream",
                          ok=(201,))

    def upload_reference(self, data: Any, *, content_type: str = "text/csv",
                         replace: bool = False) -> dict[str, Any]:
        """Upload this version's reference data: a pandas DataFrame (one column per feature
        plus ``score``, ``value`` or ``predicted_label``), or CSV, JSON or Parquet bytes.
        The service's ``warnings`` (a reference too small, say) are issued as Python
        warnings. Once a prediction of the version is stored, a different reference is
        refused (409 ``version_in_use``) unless ``replace=True`` (audited)."""
        if hasattr(data, "to_csv"):
            data, content_type = data.to_csv(index=False).encode(), "text/csv"
        path = _http.model_path(self.model, "versions", self.version, "reference")
        answer = self._call("POST", path + ("?replace=true" if replace else ""), body=data,
                            content_type=content_type, ok=(201,))
        for text in answer.get("warnings") or ():
            warnings.warn(f"modelmon: {text}", UserWarning, stacklevel=2)
        return answer

    def register_sklearn(self, estimator: Any, **kwargs: Any) -> dict[str, Any]:
        """Register the model, this version and its weights from a fitted scikit-learn
        estimator or pipeline; see ``modelmon_client.sklearn.register_sklearn``."""
        from modelmon_client.sklearn import register_sklearn

        return register_sklearn(self, estimator, **kwargs)


def _classes(classes: Sequence[Any] | None) -> tuple[str, ...] | None:
    """Class names as the service has them: strings (integers become their decimal form)."""
    return None if classes is None else tuple(str(_wire.plain(c) if hasattr(c, "tolist") else c)
                                              for c in classes)


def _close_all() -> None:
    for m in list(_open):
        m.close(m.exit_timeout)


def _after_fork() -> None:
    for m in list(_open):
        m._sender._reset()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
