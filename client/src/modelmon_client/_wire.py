"""Records as the service reads them: prediction payloads shaped by the model's task, numpy
and pandas values made plain, timestamps as ISO 8601, each record encoded once.

Everything here runs in the sender thread, so that ``Monitor.log`` stays an enqueue.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

TASKS = ("binary_classification", "multiclass_classification", "regression")
PAYLOAD_KEYS = frozenset({"score", "probabilities", "value", "label"})


@dataclass(frozen=True)
class ModelInfo:
    """What shaping a bare prediction needs: the task, and the classes for probability rows."""

    task: str
    classes: tuple[str, ...] | None = None


class Unsendable(ValueError):
    """A record the client cannot put on the wire; the message says what to change."""


def plain(value: Any) -> Any:
    """numpy scalars and arrays to Python values; pandas' missing markers to None."""
    if hasattr(value, "tolist"):
        return value.tolist()
    name = type(value).__name__
    if name in ("NAType", "NaTType"):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"a {name} cannot be sent as JSON")


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=plain).encode


def timestamp(value: Any) -> Any:
    """ISO 8601 for the service: epoch seconds (``time.time()``), datetimes (naive ones are
    UTC, as the service reads them) and strings as given."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def missing_as_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """NaN (pandas' and numpy's missing value) becomes null, which the service stores as a
    missing value; infinities are left for the service to refuse with the field's name."""
    out = {}
    for k, v in values.items():
        if v is not None and type(v) is not float and type(v) is not str and hasattr(v, "item"):
            v = v.item()
        elif type(v).__name__ in ("NAType", "NaTType"):
            v = None
        if type(v) is float and v != v:
            v = None
        out[k] = v
    return out


def needs_info(prediction: Any) -> bool:
    """Whether shaping this prediction needs the model's task (it is not a payload already)."""
    return not (isinstance(prediction, Mapping) and prediction
                and prediction.keys() <= PAYLOAD_KEYS)


def payload(prediction: Any, info: ModelInfo | None) -> dict[str, Any]:
    """The ``prediction`` object of a record, from what the caller logged."""
    if isinstance(prediction, Mapping):
        if prediction and prediction.keys() <= PAYLOAD_KEYS:
            return dict(prediction)
        return {"probabilities": dict(prediction)}
    if info is None:
        raise Unsendable("a bare prediction needs the model's task: pass task= to Monitor, "
                         "register the model through it, or log {'score': ...}, "
                         "{'probabilities': {...}} or {'value': ...}")
    task = info.task
    if isinstance(prediction, str):
        return {"label": prediction}
    if isinstance(prediction, float | int) and not isinstance(prediction, bool):
        if task == "binary_classification":
            return {"score": prediction}
        if task == "regression":
            return {"value": prediction}
        raise Unsendable("a multiclass prediction is a row of probabilities or "
                         "{'probabilities': {class: p}}, not one number")
    if isinstance(prediction, list | tuple):
        if task == "binary_classification" and len(prediction) == 2:
            return {"score": prediction[1]}  # predict_proba's row: [P(class 0), P(class 1)]
        if task == "regression" and len(prediction) == 1:
            return {"value": prediction[0]}
        if task == "multiclass_classification" and info.classes is not None \
                and len(prediction) == len(info.classes):
            return {"probabilities": dict(zip(info.classes, prediction, strict=True))}
        raise Unsendable(f"a row of {len(prediction)} values does not fit a {task} model with "
                         f"{len(info.classes or ())} classes")
    raise Unsendable(f"prediction of type {type(prediction).__name__} is not understood")


def encode_prediction(model: str, version: str, entry: tuple[Any, ...],
                      info: ModelInfo | None) -> bytes:
    """One record's JSON; Unsendable, TypeError or ValueError when it cannot be encoded."""
    _, pid, ts, features, prediction, cohorts, label, latency_ms = entry
    rec: dict[str, Any] = {
        "model": model, "version": version, "prediction_id": pid,
        "timestamp": timestamp(ts), "features": missing_as_none(features),
        "prediction": payload(prediction, info),
    }
    if cohorts:
        rec["cohorts"] = cohorts
    if label is not None and not (isinstance(label, float) and math.isnan(label)):
        rec["label"] = label
    if latency_ms is not None:
        rec["latency_ms"] = latency_ms
    return _encode(rec).encode("utf-8")


def encode_label(model: str, entry: tuple[Any, ...]) -> bytes:
    _, pid, label, ts = entry
    return _encode({"model": model, "prediction_id": pid, "label": label,
                    "timestamp": timestamp(ts)}).encode("utf-8")


def batch_body(parts: list[bytes]) -> bytes:
    return b'{"records":[' + b",".join(parts) + b"]}"
