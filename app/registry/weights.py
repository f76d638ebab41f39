"""Weights of a version: a .npz or .safetensors file (streamed to disk, read one tensor at a
time) or per-tensor summaries from a pipeline that cannot send the file. Stats are stored per
tensor, and the version is compared with its neighbours by registration order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from app.errors import Invalid, Problem, TooLarge
from app.evaluation import policy as model_policy
from app.evaluation.checks.versions import version_checks
from app.jsonvalues import find_unstorable, parse_json, text_problem
from app.monitoring import (
    OK,
    FeatureWeights,
    TensorStats,
    WeightFileError,
    WeightFileTooLarge,
    WeightLimits,
    WeightSummary,
    feature_delta,
    file_feature_weights,
    summarise_weight_file,
    weight_delta,
    weight_summary,
)
from app.registry.limits import json_upload, too_large
from app.registry.versions import guard_replacement, require_version
from app.settings import Settings
from app.storage import registry
from app.storage import weights as store

MAX_TENSOR_NAME = 512
FILE_TYPES = ("application/octet-stream", "application/zip", "application/x-npz",
              "application/vnd.safetensors", "application/x-safetensors")
JSON_TYPES = ("application/json",)
ACCEPTED = FILE_TYPES + JSON_TYPES
# Tensors whose feature axis is known without configuration: the client's scikit-learn helper
# uploads a linear model's coef_ as "coef" (features on the last axis, for (n_features,),
# (1, n_features) and (n_classes, n_features) alike) and a perceptron's first layer as
# "layer0/kernel" (n_features, hidden).
AUTO_FEATURE_AXES = (("coef", -1), ("layer0/kernel", 0))


# The setting behind each of WeightLimits' fields, as a 413 names it.
LIMIT_SETTINGS = {"tensor_bytes": "weights_max_inflated_bytes", "index_bytes": "max_body_bytes"}


def weight_limits(settings: Settings) -> WeightLimits:
    return WeightLimits(tensor_bytes=settings.weights_max_inflated_bytes,
                        index_bytes=settings.max_body_bytes)


def _too_large(exc: WeightFileTooLarge) -> TooLarge:
    return too_large(str(exc), LIMIT_SETTINGS[exc.limit], exc.value, exc.field)


def summary_from_upload(path: Path, ctype: str, settings: Settings) -> WeightSummary:
    """The statistics of an uploaded file or of the summaries sent as JSON; Invalid (nothing
    stored) for an unreadable file, invalid summaries or tensor names that cannot be
    stored; TooLarge for a file that would become more than the limits allow."""
    if ctype in JSON_TYPES:
        summary = _summary_from_json(json_upload(path, settings, "send the file instead"))
    else:
        try:
            summary = summarise_weight_file(path, settings.weights_zero_eps,
                                            fmt=_file_format(path),
                                            limits=weight_limits(settings))
        except WeightFileTooLarge as exc:
            raise _too_large(exc) from None
        except WeightFileError as exc:
            raise Invalid("invalid_weights", "the file is not a readable .npz or "
                          ".safetensors weight file; nothing was stored",
                          [Problem(str(exc)[:300], field="body")]) from None
    bad = [Problem("name too long", field=t.name[:200]) for t in summary.tensors
           if len(t.name) > MAX_TENSOR_NAME]
    bad += [Problem(f"tensor name {p}", field=repr(t.name)[:200]) for t in summary.tensors
            if (p := text_problem(t.name))]
    if bad:
        raise Invalid("validation_error", "tensor names must be storable text of at most "
                      f"{MAX_TENSOR_NAME} characters; nothing was stored", bad)
    return summary


def _summary_from_json(raw: bytes) -> WeightSummary:
    body = parse_json(raw)
    bad = find_unstorable(body)
    if bad:
        raise Invalid("validation_error", "the summaries hold values that cannot be "
                      "stored", [Problem(p, field=f) for f, p in bad])
    tensors = body.get("tensors") if isinstance(body, dict) else None
    if not isinstance(tensors, list) or not tensors:
        raise Invalid("validation_error", "send {\"tensors\": [{name, shape, count, "
                      "zeros, l1, l2, max_abs, mean, std}, ...]}",
                      [Problem("required non-empty array", field="tensors")])
    problems, items = [], []
    for i, t in enumerate(tensors):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            problems.append(Problem("each tensor needs a non-empty string name",
                                    field="name", index=i))
            continue
        try:
            items.append(TensorStats.from_dict(t))
        except ValueError as exc:
            problems.append(Problem(str(exc)[:300], field=t["name"][:200], index=i))
    if problems:
        raise Invalid("validation_error", "invalid tensor summaries; nothing was "
                      "stored", problems)
    try:
        return weight_summary(items)
    except ValueError as exc:
        raise Invalid("validation_error", str(exc),
                      [Problem(str(exc), field="tensors")]) from None


def _file_format(path: Path) -> str:
    with open(path, "rb") as f:
        magic = f.read(4)
    return "npz" if magic.startswith(b"PK") else "safetensors"


def _feature_names(model: registry.ModelRow, version: registry.VersionRow) -> list[str]:
    """The version's features (its own list, else the model's), in registration order: the
    order a weight tensor's feature axis follows."""
    return [f["name"] for f in registry.for_version(model, version.features).features]


def _feature_problem(message: str, field: str) -> Invalid:
    return Invalid("validation_error", f"{message}; nothing was stored",
                   [Problem(message[:300], field=field)])


def features_from_upload(path: Path, ctype: str, summary: WeightSummary, features: list[str],
                         tensor: str | None, axis: int | None, settings: Settings
                         ) -> tuple[FeatureWeights | None, str | None]:
    """(per-feature weights, why there are none) of the tensor named by
    ``feature_tensor``/``feature_axis`` (Invalid when it does not fit the model's features), or
    of a tensor the scikit-learn helper names (AUTO_FEATURE_AXES). A recognised tensor that
    does not have one entry per feature (a Pipeline whose encoder expanded a categorical
    feature into several columns) is left out with the reason, never refused: the upload
    stands without per-feature figures."""
    if ctype in JSON_TYPES:
        if tensor is not None or axis is not None:
            raise _feature_problem("per-tensor summaries hold no per-feature weights: send "
                                   "the .npz or .safetensors file to use feature_tensor",
                                   "feature_tensor")
        return None, None
    shapes = {t.name: t for t in summary.tensors}
    if tensor is None:
        if axis is not None:
            raise _feature_problem("feature_axis needs feature_tensor", "feature_axis")
        tensor, axis = next(((n, a) for n, a in AUTO_FEATURE_AXES if n in shapes),
                            (None, None))
        if tensor is None:
            return None, None
        shape = shapes[tensor].shape or ()
        if len(shape) == 0 or shape[axis] != len(features):  # type: ignore[index]
            return None, (f"tensor {tensor!r} of shape {list(shape)} does not have one entry "
                          f"per feature on axis {axis} (the model declares {len(features)}); "
                          "name a tensor that does with feature_tensor and feature_axis")
    stats = shapes.get(tensor)
    if stats is None:
        raise _feature_problem(f"no tensor {tensor[:200]!r} in the file (it holds "
                               f"{', '.join(sorted(shapes))[:200]})", "feature_tensor")
    if stats.status != OK:
        raise _feature_problem(f"tensor {tensor[:200]!r}: {stats.reason}", "feature_tensor")
    shape = stats.shape or ()
    if axis is None:
        if len(shape) != 1:
            raise _feature_problem(f"tensor {tensor[:200]!r} has shape {list(shape)}: say "
                                   "which axis holds the features", "feature_axis")
        axis = 0
    try:
        return file_feature_weights(path, tensor, features, axis, settings.weights_zero_eps,
                                    fmt=_file_format(path),
                                    limits=weight_limits(settings)), None
    except WeightFileTooLarge as exc:
        raise _too_large(exc) from None
    except WeightFileError as exc:
        raise _feature_problem(str(exc), "feature_tensor") from None
    except ValueError as exc:
        raise _feature_problem(f"tensor {tensor[:200]!r} of shape {list(shape)}: {exc} "
                               f"({', '.join(features)[:200]})", "feature_axis") from None


def load_features(*, conn: Connection, version_id: int) -> FeatureWeights | None:
    stats = store.feature_weights_of(conn=conn, version_id=version_id)
    return None if stats is None else FeatureWeights.from_dict(stats)


def _stats(d: dict[str, Any]) -> TensorStats:
    return TensorStats(**{**d, "shape": None if d["shape"] is None else tuple(d["shape"])})


def load_summary(*, conn: Connection, version_id: int) -> WeightSummary | None:
    tensors = store.tensor_stats(conn=conn, version_id=version_id)
    return None if tensors is None else weight_summary([_stats(d) for d in tensors])


def _store_delta(conn: Connection, model_id: int, base: registry.VersionRow,
                 cand: registry.VersionRow) -> dict[str, Any] | None:
    b = load_summary(conn=conn, version_id=base.id)
    c = load_summary(conn=conn, version_id=cand.id)
    if b is None or c is None:
        return None
    delta = _delta(conn, b, c, base.id, cand.id)
    store.put_delta(conn=conn, model_id=model_id, base_version_id=base.id,
                    candidate_version_id=cand.id, delta=delta)
    return delta


def _delta(conn: Connection, b: WeightSummary, c: WeightSummary, base_id: int,
           cand_id: int) -> dict[str, Any]:
    """Weight deltas, with the per-feature delta under "features" (None unless both versions
    have per-feature weights)."""
    fb = load_features(conn=conn, version_id=base_id)
    fc = load_features(conn=conn, version_id=cand_id)
    return {**weight_delta(b, c).to_dict(),
            "features": None if fb is None or fc is None else feature_delta(fb, fc).to_dict()}


def upload_weights(*, engine: Engine, settings: Settings, model_name: str, version: str,
                   path: Path, ctype: str, feature_tensor: str | None,
                   feature_axis: int | None, replace: bool = False) -> dict[str, Any]:
    """Read an uploaded weight file (or summaries), find its per-feature weights, store both
    and the deltas to the neighbouring versions; what was stored. Different weights of a
    version with stored predictions need ``replace`` (versions.guard_replacement)."""
    summary = summary_from_upload(path, ctype, settings)
    names = _feature_names(*require_version(engine=engine, model=model_name, version=version))
    per_feature, skipped = features_from_upload(path, ctype, summary, names, feature_tensor,
                                                feature_axis, settings)
    return store_weights(engine=engine, model_name=model_name, version=version, summary=summary,
                         features=per_feature, features_reason=skipped, replace=replace)


def store_weights(*, engine: Engine, model_name: str, version: str,
                  summary: WeightSummary, features: FeatureWeights | None = None,
                  features_reason: str | None = None, replace: bool
                  ) -> dict[str, Any]:
    """Replace the version's stats (and per-feature weights); store its delta to the nearest
    earlier version with weights (its predecessor) and the next later version's delta to it."""
    with engine.begin() as conn:
        model, v = model_version(conn, model_name, version)
        stored = store.tensor_stats(conn=conn, version_id=v.id)
        guard_replacement(conn, model, v, "weights",
                          None if stored is None else {t["name"]: t for t in stored},
                          {t.name: t.to_dict() for t in summary.tensors}, replace)
        store.replace_weights(
            conn=conn, model_id=model.id, version_id=v.id,
            tensors=[(t.name, t.to_dict()) for t in summary.tensors],
            overall=summary.overall.to_dict(),
            features=None if features is None else {
                "tensor": features.tensor, "axis": features.axis,
                "nonzero": features.nonzero, "stats": features.to_dict()})
        versions = registry.list_versions(conn=conn, model_id=model.id)
        have = store.with_weights(conn=conn, version_ids=[x.id for x in versions])
        pos = [x.id for x in versions].index(v.id)
        before = [x for x in versions[:pos] if x.id in have]
        after = [x for x in versions[pos + 1:] if x.id in have]
        delta = _store_delta(conn, model.id, before[-1], v) if before else None
        if after:
            _store_delta(conn, model.id, v, after[0])
    return {
        "model": model.name, "version": version, "tensors": len(summary.tensors),
        "overall": summary.overall.to_dict(),
        "predecessor": before[-1].version if before else None,
        "delta_vs_predecessor": None if delta is None else delta["overall"],
        "features": None if features is None else features.to_dict(),
        **({"features_skipped": features_reason} if features_reason else {}),
        "features_vs_predecessor": None if delta is None else delta["features"],
    }


def _features_side(conn: Connection, version_id: int) -> dict[str, Any] | None:
    fw = load_features(conn=conn, version_id=version_id)
    return None if fw is None else {"tensor": fw.tensor, "axis": fw.axis,
                                    "nonzero": fw.nonzero,
                                    "importance": {f.feature: f.importance
                                                   for f in fw.features}}


def model_version(conn: Connection, model_name: str, version: str
                   ) -> tuple[registry.ModelRow, registry.VersionRow]:
    model = registry.require_model(conn=conn, name=model_name)
    return model, registry.require_version(conn=conn, model=model, version=version)


def compare(*, conn: Connection, settings: Settings, model_name: str, base: str,
            candidate: str) -> dict[str, Any]:
    """Per tensor and overall deltas with both versions' regularization side by side, and
    the version checks decided on the overall delta with the model's policy now (what
    /metrics exports for the alerts)."""
    model, b = model_version(conn, model_name, base)
    _, c = model_version(conn, model_name, candidate)
    sums = {}
    for field_name, v in (("base", b), ("candidate", c)):
        s = load_summary(conn=conn, version_id=v.id)
        if s is None:
            raise Invalid("no_weights", f"no weights uploaded for version {v.version!r}; "
                          "upload them with POST .../versions/{version}/weights",
                          [Problem("no weights", field=field_name)])
        sums[field_name] = s
    delta = _delta(conn, sums["base"], sums["candidate"], b.id, c.id)

    def side(v: registry.VersionRow, s: WeightSummary) -> dict[str, Any]:
        return {"version": v.version, "created_at": v.created_at.isoformat(),
                "regularization": v.metadata.get("regularization"),
                "hyperparameters": v.metadata.get("hyperparameters", {}),
                "artifact_bytes": v.metadata.get("artifact_bytes"),
                "overall": s.overall.to_dict(),
                "features": _features_side(conn, v.id)}

    checks = version_checks(delta["overall"],
                            model_policy.effective(settings, model.policy).thresholds)
    return {"model": model.name, "base": side(b, sums["base"]),
            "candidate": side(c, sums["candidate"]), **delta, "checks": checks.to_dict()}
