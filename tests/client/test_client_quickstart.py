"""The scikit-learn quickstart as a newcomer writes it: the breast-cancer data set, whose
feature names hold spaces (`mean radius`), a pipeline scaling it before an L1 logistic
regression, `validation=`; no warning on the way, and the cohorts report then carries the
generalization gap's decision."""

from __future__ import annotations

import re
import warnings
from datetime import UTC, datetime, timedelta

import httpx2

from tests.conftest import ROOT


def readme_quickstart() -> str:
    """The README's scikit-learn quickstart, the first python block of its client section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python client", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


def test_the_breast_cancer_quickstart_registers_logs_and_reports_a_gap(sqlite_server):
    start = datetime.now(UTC) - timedelta(minutes=1)
    code = readme_quickstart()
    assert 'Monitor("http://127.0.0.1:8000"' in code and "l1_ratio=1" in code
    assert "validation=(X_val, y_val)" in code and "load_breast_cancer" in code
    # -- as the README reads, against this test's server; any warning fails it (scikit-learn's
    # deprecations and convergence warnings included)
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(code.replace("http://127.0.0.1:8000", sqlite_server.url), ns)
    X, X_val, y_val, model, monitor = (ns[k] for k in ("X", "X_val", "y_val", "model",
                                                        "monitor"))
    assert (monitor.stats.sent, monitor.stats.refused) == (len(X_val), 0)
    # --
    url = f"{sqlite_server.url}/v1/models/breast-cancer"
    features = [f["name"] for f in httpx2.get(url).json()["features"]]
    assert features == list(X.columns) and "mean radius" in features
    stored = httpx2.get(f"{url}/versions/v1").json()["metadata"]
    linear = model[-1]  # the pipeline's last step: the regularization and weights are its
    assert stored["regularization"] == {"type": "l1", "lambda": 1.0}  # 1 / C
    assert stored["hyperparameters"]["l1_ratio"] == 1 and "with_mean" not in stored[
        "hyperparameters"]
    assert stored["training"]["parameters"] == 31  # 30 coefficients and the intercept
    nonzero = int((linear.coef_ != 0).sum() + (linear.intercept_ != 0).sum())
    assert stored["training"]["nonzero_parameters"] == nonzero < 31  # L1 zeroed some
    window = {"start": start.isoformat(), "end": (datetime.now(UTC) + timedelta(minutes=1))
              .isoformat()}
    report = httpx2.get(f"{url}/reports/cohorts", params=window).json()
    (version,) = report["versions"]
    gap = version["generalization_gap"]["overall"]
    wrong = float((model.predict(X_val) != y_val).mean())
    assert gap["n"] == len(X_val)
    # logged on the validation rows themselves: production error is the validation error
    assert gap["validation_error"] == gap["production_error"] == wrong
    assert gap["decision"] == "ok"
    drift = httpx2.get(f"{url}/reports/drift", params=window).json()
    assert "mean radius" in {f["feature"] for f in drift["versions"][0]["features"]}


def test_refused_feature_names_are_all_named_in_one_problem(sqlite_server):
    bad = [f"col\t{i}" for i in range(30)] + ["x" * 129, ""]
    body = {"name": "names", "task": "regression",
            "features": [{"name": n, "type": "numeric"} for n in [*bad, "fine name", "ünï/ok"]]}
    r = httpx2.post(f"{sqlite_server.url}/v1/models", json=body)
    assert r.status_code == 422, r.text
    (problem,) = r.json()["details"]
    assert problem["problem"].startswith("32 feature name(s) refused")
    for i in range(30):
        assert repr(f"col\t{i}") in problem["problem"]
    assert "129 characters long" in problem["problem"] and "an empty name" in problem["problem"]
    assert "fine name" not in problem["problem"]
    body["features"] = [{"name": n, "type": "numeric"} for n in ("fine name", "ünï/ok")]
    assert httpx2.post(f"{sqlite_server.url}/v1/models", json=body).status_code == 201
