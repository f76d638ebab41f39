"""modelmon's CBPE against NannyML's on the same reference and analysis data.

    .venv/bin/python bench/nannyml_oracle.py [--seed 7] [--venv /tmp/nannyml-venv]

NannyML (0.13.x, with xgboost, lightgbm and cloud SDKs) is never a dependency of modelmon:
on first use this script builds a throwaway venv (``--venv``) with ``pip install
nannyml==0.13.*`` and runs NannyML there, in a child process, on data it generates here
(binary and multiclass: miscalibrated scores, a reference, analysis chunks under a
covariate shift). It prints, per chunk and metric, both estimates and their difference:
accuracy, precision, recall and F1 must agree within 1e-6, ROC AUC within modelmon's
stated histogram bound (app/monitoring/cbpe.py). Exits 1 when any does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.monitoring.cbpe import cbpe_sums, estimate, fit_calibration

CHUNK = 5_000
METRICS = ("accuracy", "precision", "recall", "f1")

CHILD = r"""
import json, sys, warnings
import numpy as np, pandas as pd, nannyml as nml
warnings.simplefilter("ignore")
src = json.load(open(sys.argv[1]))
out = {"version": nml.__version__}
for task, d in src.items():
    ref, ana = pd.DataFrame(d["reference"]), pd.DataFrame(d["analysis"])
    if task == "binary":
        proba = "score"
    else:
        proba = {c: f"p_{c}" for c in d["classes"]}
    est = nml.CBPE(y_pred_proba=proba, y_pred="y_pred", y_true="y",
                   problem_type="classification_" + task, chunk_size=d["chunk"],
                   metrics=["roc_auc", "f1", "precision", "recall", "accuracy"])
    est.fit(ref)
    res = est.estimate(ana).filter(period="analysis").to_df()
    if task == "binary":
        calibrated = [bool(est.needs_calibration)]
    else:
        calibrated = [type(est._calibrators[c]).__name__ != "NoopCalibrator"
                      for c in sorted(d["classes"])]
    out[task] = {"calibrated": calibrated,
                 "metrics": {m: res[(m, "value")].tolist()
                             for m in ["roc_auc", "f1", "precision", "recall", "accuracy"]}}
json.dump(out, open(sys.argv[2], "w"))
"""


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import nannyml"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"building {venv} with nannyml==0.13.* (first use; a few minutes)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # nannyml 0.13.1 imports statsmodels without declaring it
    subprocess.run([str(python), "-m", "pip", "install", "-q", "nannyml==0.13.*", "statsmodels"],
                   check=True)
    return python


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def binary_data(rng: np.random.Generator, n_ref: int, chunks: int) -> dict:
    """A model whose scores are overconfident (calibration helps); the analysis drifts
    toward the region where it is least sure, chunk by chunk."""
    def draw(n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(shift, 1.0, n)
        truth = _sigmoid(1.2 * x - 0.4)
        score = _sigmoid(2.0 * x - 0.2 + rng.normal(0, 0.3, n))
        return np.round(score, 6), (rng.random(n) < truth).astype(int)
    s, y = draw(n_ref, 0.0)
    ana = [draw(CHUNK, -0.25 * i)[0] for i in range(chunks)]
    a = np.concatenate(ana)
    return {"reference": {"score": s.tolist(), "y": y.tolist(),
                          "y_pred": (s >= 0.5).astype(int).tolist()},
            "analysis": {"score": a.tolist(), "y_pred": (a >= 0.5).astype(int).tolist()},
            "chunk": CHUNK}


def multiclass_data(rng: np.random.Generator, n_ref: int, chunks: int) -> dict:
    classes = ["a", "b", "c"]

    def draw(n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(0, 1, (n, 2)) + [shift, 0.0]
        logits = np.column_stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]])
        truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        seen = np.exp(1.7 * logits) / np.exp(1.7 * logits).sum(axis=1, keepdims=True)
        y = (truth.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
        return np.round(seen, 6), y
    p, y = draw(n_ref, 0.0)
    a = np.concatenate([draw(CHUNK, 0.3 * i)[0] for i in range(chunks)])

    def frame(p: np.ndarray) -> dict:
        d = {f"p_{c}": p[:, j].tolist() for j, c in enumerate(classes)}
        d["y_pred"] = [classes[j] for j in np.argmax(p, axis=1)]
        return d
    ref = frame(p)
    ref["y"] = [classes[j] for j in y]
    return {"reference": ref, "analysis": frame(a), "chunk": CHUNK, "classes": classes}


def ours(task: str, d: dict) -> tuple[list[bool], list[dict]]:
    """modelmon's estimate per chunk of the analysis data."""
    if task == "binary":
        ref, y = np.asarray(d["reference"]["score"]), np.asarray(d["reference"]["y"])
        maps = (fit_calibration(ref, y),)
        raw = np.asarray(d["analysis"]["score"])
    else:
        cols = [f"p_{c}" for c in d["classes"]]
        ref = np.column_stack([d["reference"][c] for c in cols])
        labels = np.asarray([d["classes"].index(c) for c in d["reference"]["y"]])
        maps = tuple(fit_calibration(ref[:, j], labels == j) for j in range(len(cols)))
        raw = np.column_stack([d["analysis"][c] for c in cols])
    out = []
    for start in range(0, raw.shape[0] - CHUNK + 1, CHUNK):
        e = estimate(cbpe_sums(maps, raw[start:start + CHUNK]))
        out.append({**{m: getattr(e, m).value for m in METRICS},
                    "roc_auc": e.roc_auc, "roc_auc_bound": e.roc_auc_bound})
    return [bool(m.x) for m in maps], out


def compare(task: str, d: dict, theirs: dict) -> bool:
    calibrated, mine = ours(task, d)
    print(f"\n{task}: calibration kept per class: modelmon {calibrated}, "
          f"NannyML {theirs['calibrated']}")
    print(f"{'chunk':>5} {'metric':>10} {'modelmon':>12} {'NannyML':>12} {'|diff|':>10} "
          f"{'allowed':>10}")
    ok = calibrated == theirs["calibrated"]
    worst = dict.fromkeys((*METRICS, "roc_auc"), 0.0)
    for i, row in enumerate(mine):
        for m in (*METRICS, "roc_auc"):
            other = theirs["metrics"][m][i]
            diff = abs(row[m] - other)
            allowed = 1e-6 if m != "roc_auc" else row["roc_auc_bound"] + 1e-6
            ok &= diff <= allowed
            worst[m] = max(worst[m], diff)
            print(f"{i:>5} {m:>10} {row[m]:>12.8f} {other:>12.8f} {diff:>10.2e} "
                  f"{allowed:>10.2e}{'' if diff <= allowed else '  FAIL'}")
    print(f"{task}: largest |diff| " + ", ".join(f"{m} {v:.1e}" for m, v in worst.items()))
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--venv", type=Path, default=Path("/tmp/nannyml-venv"))
    ap.add_argument("--reference", type=int, default=20_000)
    ap.add_argument("--chunks", type=int, default=5)
    args = ap.parse_args()
    python = ensure_venv(args.venv)
    rng = np.random.default_rng(args.seed)
    data = {"binary": binary_data(rng, args.reference, args.chunks),
            "multiclass": multiclass_data(rng, args.reference, args.chunks)}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst, child = Path(tmp, "in.json"), Path(tmp, "out.json"), Path(tmp, "child.py")
        src.write_text(json.dumps(data))
        child.write_text(CHILD)
        env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}  # no telemetry upload
        subprocess.run([str(python), str(child), str(src), str(dst)], check=True, env=env)
        theirs = json.loads(dst.read_text())
    print(f"NannyML {theirs['version']}, seed {args.seed}, reference {args.reference} rows, "
          f"{args.chunks} analysis chunks of {CHUNK}")
    ok = all([compare(task, data[task], theirs[task]) for task in ("binary", "multiclass")])
    print("\nagree" if ok else "\nDISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
