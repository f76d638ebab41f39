"""Registering a fitted scikit-learn estimator: its features, task and classes, its
regularization and hyperparameters, its size, and its coefficients as weights.

Imported on first use; needs scikit-learn (and so numpy).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelmon_client.monitor import Monitor

_INT_LIMIT = 2**63  # the service keeps integers in metadata below this magnitude


def final_estimator(estimator: Any) -> Any:
    """The last step of a Pipeline (the one with coefficients); the estimator itself
    otherwise."""
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def regularization(estimator: Any) -> dict[str, Any] | None:
    """``{type, lambda, l1_ratio}`` from ``penalty``, ``C``, ``alpha`` and ``l1_ratio``.

    The strength is the estimator's own: ``alpha``, or ``1 / C`` where the estimator takes
    the inverse strength ``C`` (LogisticRegression, LinearSVC, SVC); the raw values stay in
    the hyperparameters. Unregularised linear models are ``none``; estimators with neither
    parameter nor coefficients (trees, say) have no entry.
    """
    est = final_estimator(estimator)
    params = est.get_params(deep=False)
    if "C" in params:
        c = params["C"]
        strength = 1.0 / c if isinstance(c, int | float) and 0 < c < math.inf else 0.0
    elif "alpha" in params and isinstance(params["alpha"], int | float):
        strength = float(params["alpha"])
    elif hasattr(est, "coef_") or hasattr(est, "coefs_"):
        return {"type": "none"}
    else:
        return None
    penalty = params.get("penalty", "absent")
    ratio = params.get("l1_ratio", getattr(est, "l1_ratio", None))
    if penalty in (None, "none") or not strength > 0:
        return {"type": "none"}
    if penalty in ("l1", "l2"):
        kind = penalty
    elif ratio is None:  # Ridge, SVC, MLP: alpha or C penalises the squared L2 norm
        kind = "l2"
    else:  # "elasticnet", or LogisticRegression's l1_ratio since penalty was deprecated
        kind = "l1" if ratio >= 1 else "l2" if ratio <= 0 else "elastic_net"
    out: dict[str, Any] = {"type": kind, "lambda": strength}
    if kind == "elastic_net":
        out["l1_ratio"] = float(ratio)
    return out


def hyperparameters(estimator: Any) -> dict[str, Any]:
    """The final estimator's own parameters that are plain JSON values."""
    out = {}
    for k, v in final_estimator(estimator).get_params(deep=False).items():
        if hasattr(v, "item") and not hasattr(v, "__len__"):
            v = v.item()  # numpy scalars
        if v is None or isinstance(v, bool | str):
            out[k] = v
        elif isinstance(v, int) and abs(v) < _INT_LIMIT:
            out[k] = v
        elif isinstance(v, float) and math.isfinite(v):
            out[k] = v
    return out


def weight_tensors(estimator: Any) -> dict[str, Any]:
    """Coefficients by tensor name: ``coef`` and ``intercept`` for linear models,
    ``layer{i}/kernel`` and ``layer{i}/bias`` for multi-layer perceptrons; empty otherwise."""
    import numpy as np

    est = final_estimator(estimator)
    if hasattr(est, "coefs_"):
        out = {}
        for i, (w, b) in enumerate(zip(est.coefs_, est.intercepts_, strict=True)):
            out[f"layer{i}/kernel"] = np.asarray(w)
            out[f"layer{i}/bias"] = np.asarray(b)
        return out
    try:
        coef = est.coef_
    except AttributeError:  # not linear, or a kernel SVC whose coef_ is a property that raises
        return {}
    if hasattr(coef, "toarray"):  # sparsified
        coef = coef.toarray()
    out = {"coef": np.asarray(coef, dtype=float)}
    intercept = getattr(est, "intercept_", None)
    if intercept is not None:
        out["intercept"] = np.atleast_1d(np.asarray(intercept, dtype=float))
    return out


def model_definition(estimator: Any, feature_names: Sequence[str] | None = None
                     ) -> tuple[str, list[str], list[str] | None]:
    """(task, feature names, classes) of a fitted estimator; classes as strings."""
    from sklearn.base import is_classifier

    names = feature_names if feature_names is not None else getattr(
        estimator, "feature_names_in_", None)
    if names is None:
        n = getattr(estimator, "n_features_in_", None)
        if n is None:
            raise ValueError("the estimator is not fitted, or has no n_features_in_: "
                             "pass feature_names")
        names = [f"x{i}" for i in range(n)]
    names = [str(n) for n in names]
    if is_classifier(estimator):
        classes = [str(c.item() if hasattr(c, "item") else c)
                   for c in final_estimator(estimator).classes_]
        task = "binary_classification" if len(classes) == 2 else "multiclass_classification"
        return task, names, classes
    return "regression", names, None


def training_figures(estimator: Any, task: str, validation: tuple[Any, Any],
                     cohorts: Mapping[str, Sequence[Any]] | None = None) -> dict[str, Any]:
    """What the service's generalization gap compares production with, measured on a
    validation set ``(X_val, y_val)``: the error rate (classification) or mean absolute error
    (regression), overall and per ``cohorts`` value (``{key: one value per row}``), the rows,
    and the parameters (non-zero ones too) of a linear model."""
    import numpy as np

    x, y = validation
    y = np.asarray(y)
    predicted = np.asarray(estimator.predict(x))
    if task == "regression":
        err = np.abs(predicted.astype(float) - y.astype(float))
    else:
        err = (predicted.astype(str) != y.astype(str)).astype(float)
    out: dict[str, Any] = {"validation_error": float(err.mean()),
                           "validation_rows": int(y.shape[0])}
    for key, values in (cohorts or {}).items():
        values = np.asarray(values, dtype=object)
        present = [v for v in sorted(set(values.tolist())) if v is not None]
        out.setdefault("cohort_validation_error", {}).update({
            f"{key}={v}": float(err[values == v].mean()) for v in present})
        out.setdefault("cohort_validation_rows", {}).update({
            f"{key}={v}": int((values == v).sum()) for v in present})
    tensors = weight_tensors(estimator)
    if tensors:
        out["parameters"] = int(sum(np.asarray(t).size for t in tensors.values()))
        out["nonzero_parameters"] = int(sum(np.count_nonzero(t) for t in tensors.values()))
    return out


def register_sklearn(monitor: Monitor, estimator: Any, *,
                     feature_names: Sequence[str] | None = None,
                     categorical: Iterable[str] = (), cohort_keys: Sequence[str] = (),
                     hyperparameters_extra: dict[str, Any] | None = None,
                     weights: bool = True, created_at: datetime | str | None = None,
                     validation: tuple[Any, Any] | None = None,
                     validation_cohorts: Mapping[str, Sequence[Any]] | None = None,
                     training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Register ``monitor``'s model and version from a fitted estimator (or Pipeline):
    features from ``feature_names_in_`` (or ``feature_names``, or ``x0..xN``; numeric unless
    named in ``categorical``), task and classes from ``classes_``, regularization from
    ``penalty``/``C``/``alpha``/``l1_ratio``, the pickled size as ``artifact_bytes``, then the
    coefficients as weights. With ``validation=(X_val, y_val)`` (and ``validation_cohorts``,
    ``{cohort key: one value per validation row}``) the version's training figures are
    measured there and sent (``training_figures``; ``training`` adds or overrides figures),
    so the service's generalization gap has its baseline. Needs a token with the ``admin``
    scope. Returns the service's answers."""
    task, names, classes = model_definition(estimator, feature_names)
    model = monitor.register_model(task=task, features=names, categorical=categorical,
                                   cohort_keys=cohort_keys, classes=classes)
    metadata: dict[str, Any] = {
        "hyperparameters": {**hyperparameters(estimator), **(hyperparameters_extra or {})},
        "artifact_bytes": len(pickle.dumps(estimator)),
    }
    reg = regularization(estimator)
    if reg is not None:
        metadata["regularization"] = reg
    figures = ({} if validation is None else
               training_figures(estimator, task, validation, validation_cohorts))
    figures.update(training or {})
    if figures:
        metadata["training"] = figures
    version = monitor.register_version(metadata=metadata, created_at=created_at)
    tensors = weight_tensors(estimator) if weights else {}
    uploaded = monitor.upload_weights(tensors) if tensors else None
    return {"model": model, "version": version, "weights": uploaded}
