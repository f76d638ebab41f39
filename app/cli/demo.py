"""`modelmon demo`: a small, real scenario streamed through the public API.

A logistic regression is trained with numpy twice: v1 with a light L2 penalty (every input
feature keeps a weight), v2 with an L1 penalty that drives the weights of x4 and x5 to zero.
Both versions are registered with their training figures, their real weights (.npz, the
kernel's axis 0 named as the feature axis, so modelmon knows each feature's weight) and a
reference set. Traffic then flows to both versions with latencies and delayed labels for part
of it. After ``--incident-after`` seconds the world changes: x0 and x1 drift (pages), x4
drifts too (v2 does not use it: a ticket for v2, not a page), the scores become
over-confident, labels for one region contradict the model (cohort and generalization-gap
alerts: production error above the validation error registered with each version) and fewer
labels arrive, so every dashboard panel has data and each kind of alert fires. ``--clean``
keeps the world steady and trains both versions alike: nothing should page.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from app.cli.client import ApiClient, HttpError, add_connection_args
from app.cli.console import add_json, console

FEATURES = ["x0", "x1", "x2", "x3", "x4", "x5"]
CHANNELS = ["web", "app", "store"]
REGIONS = ["north", "south", "east", "west"]
TRUE_W = np.array([5.0, -4.0, 3.0, 1.2, 0.0, 0.0])  # x4 and x5 carry no signal
PENALTIES = {"v1": {"type": "l2", "lambda": 0.001}, "v2": {"type": "l1", "lambda": 0.01}}
CHANNEL_EFFECT = {"web": 0.0, "app": 0.8, "store": -0.8}


def _post(api: ApiClient, path: str, body: Any = None, **kw: Any) -> Any:
    """A registration the demo may have made in an earlier run: 409 (registered otherwise)
    keeps what is there."""
    try:
        return api.post(path, body, **kw)
    except HttpError as err:
        if err.status == 409:
            return None
        raise


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def world(rng: np.random.Generator, n: int, drift: bool = False) -> dict[str, np.ndarray]:
    x = rng.normal(size=(n, len(FEATURES)))
    if drift:
        x[:, 0] += 1.5
        x[:, 1] *= 2.0
        x[:, 4] += 1.5
    channel = rng.choice(CHANNELS, size=n, p=[0.5, 0.3, 0.2])
    region = rng.choice(REGIONS, size=n)
    logit = x @ TRUE_W + np.array([CHANNEL_EFFECT[c] for c in channel]) - 0.5
    y = (rng.random(n) < sigmoid(logit)).astype(int)
    return {"x": x, "channel": channel, "region": region, "y": y}


def design(d: dict[str, np.ndarray]) -> np.ndarray:
    """One column per input feature, in the model's feature order: the channel enters as its
    effect (an effect encoding), so each feature has exactly one weight."""
    effect = np.array([CHANNEL_EFFECT[c] for c in d["channel"]], dtype=float)
    return np.hstack([d["x"], effect[:, None]])


def train(d: dict[str, np.ndarray], penalty: dict[str, Any], steps: int = 400,
          lr: float = 0.5) -> tuple[np.ndarray, float]:
    """Regularised logistic regression by proximal gradient descent (ISTA): for L1 the
    soft-threshold step sets weak weights exactly to zero, so a stronger penalty shows up as
    sparsity and as unused features in the uploaded weights; L2 only shrinks them."""
    l1 = penalty["lambda"] if penalty["type"] == "l1" else 0.0
    l2 = penalty["lambda"] if penalty["type"] == "l2" else 0.0
    X, y = design(d), d["y"].astype(float)
    w, b = np.zeros(X.shape[1]), 0.0
    for _ in range(steps):
        p = sigmoid(X @ w + b)
        grad_w = X.T @ (p - y) / len(y) + l2 * w
        b -= lr * float(np.mean(p - y))
        w = w - lr * grad_w
        w = np.sign(w) * np.maximum(np.abs(w) - lr * l1, 0.0)
    return w, b


def npz(w: np.ndarray, b: float) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{"dense/kernel": w.reshape(-1, 1).astype(np.float32),
                     "dense/bias": np.array([b], dtype=np.float32)})
    return buf.getvalue()


def training_figures(train_set: dict[str, np.ndarray], validation_set: dict[str, np.ndarray],
                     w: np.ndarray, b: float, reg: dict[str, Any]) -> dict[str, Any]:
    """What a training pipeline registers with a version (metadata.training)."""
    def log_loss(d: dict[str, np.ndarray]) -> float:
        p = np.clip(sigmoid(design(d) @ w + b), 1e-12, 1 - 1e-12)
        return float(-np.mean(d["y"] * np.log(p) + (1 - d["y"]) * np.log(1 - p)))

    p_val = sigmoid(design(validation_set) @ w + b)
    wrong = (p_val >= 0.5).astype(int) != validation_set["y"]
    penalty = (reg["lambda"] * float(np.abs(w).sum()) if reg["type"] == "l1"
               else reg["lambda"] / 2 * float(w @ w))
    return {
        "train_loss": log_loss(train_set) + penalty, "validation_loss": log_loss(
            validation_set) + penalty, "penalty_loss": penalty,
        "validation_error": float(wrong.mean()),
        "cohort_validation_error": {f"region={r}": float(wrong[validation_set["region"] == r]
                                                         .mean()) for r in REGIONS},
        "train_rows": len(train_set["y"]), "validation_rows": len(validation_set["y"]),
        "parameters": int(w.size + 1), "nonzero_parameters": int(np.count_nonzero(w) + 1)}


def setup(api: ApiClient, model: str, clean: bool, rng: np.random.Generator
          ) -> dict[str, tuple[np.ndarray, float]]:
    _post(api, "/v1/models", {
        "name": model, "task": "binary_classification",
        "features": [{"name": f, "type": "numeric"} for f in FEATURES]
        + [{"name": "channel", "type": "categorical"}],
        "cohort_keys": ["region"], "classes": ["legit", "fraud"]})
    train_set, validation_set = world(rng, 5000), world(rng, 2000)
    penalties = {"v1": PENALTIES["v1"], "v2": PENALTIES["v1" if clean else "v2"]}
    versions = {}
    for name, reg in penalties.items():
        w, b = train(train_set, reg)
        versions[name] = (w, b)
        blob = npz(w, b)
        _post(api, f"/v1/models/{model}/versions", {
            "version": name, "metadata": {
                "regularization": reg,
                "hyperparameters": {"learning_rate": 0.5, "steps": 400},
                "artifact_bytes": len(blob),
                "training": training_figures(train_set, validation_set, w, b, reg)}})
        # the kernel's axis 0 holds the input features, in the model's feature order
        _post(api, f"/v1/models/{model}/versions/{name}/weights"
              "?feature_tensor=dense%2Fkernel&feature_axis=0", raw=blob,
              ctype="application/octet-stream")
        scores = sigmoid(design(train_set) @ w + b)
        records = [{**{f: float(train_set["x"][i, j]) for j, f in enumerate(FEATURES)},
                    "channel": str(train_set["channel"][i]), "score": float(scores[i])}
                   for i in range(len(scores))]
        _post(api, f"/v1/models/{model}/versions/{name}/reference", {"records": records})
    return versions


def batch(model: str, versions: dict[str, tuple[np.ndarray, float]], rng: np.random.Generator,
          n: int, seq: int, incident: bool) -> tuple[list[dict], list[dict]]:
    d = world(rng, n, drift=incident)
    which = rng.choice(["v2", "v1"], size=n, p=[0.7, 0.3])
    now = datetime.now(UTC)
    records, labels = [], []
    label_fraction = 0.3 if incident else 0.8
    for i in range(n):
        w, b = versions[str(which[i])]
        logit = float(design({k: v[i:i + 1] for k, v in d.items()})[0] @ w + b)
        if incident:
            logit *= 4.0  # over-confident scores: miscalibration
        score = float(sigmoid(np.array(logit)))
        pid = f"{seq}-{i}"
        records.append({
            "model": model, "version": str(which[i]), "prediction_id": pid,
            "timestamp": now.isoformat(),
            "features": {**{f: float(d["x"][i, j]) for j, f in enumerate(FEATURES)},
                         "channel": str(d["channel"][i])},
            "prediction": {"score": score, "label": "fraud" if score >= 0.5 else "legit"},
            "cohorts": {"region": str(d["region"][i])},
            "latency_ms": float(rng.lognormal(np.log(5 if which[i] == "v2" else 9), 0.4)),
        })
        if rng.random() < label_fraction:
            y = int(d["y"][i])
            if incident and d["region"][i] == "north":
                y = 1 - y  # the model fails this cohort
            labels.append({"model": model, "prediction_id": pid,
                           "label": "fraud" if y else "legit", "timestamp": now.isoformat()})
    return records, labels


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    api = ApiClient(args.url, args.token, retries=3)
    out = console(sys.stderr if args.json else sys.stdout)
    rng = np.random.default_rng(args.seed)
    plan = ("v1 and v2 both trained with a light L2 penalty (0.001)" if args.clean else
            "v1 trained with a light L2 penalty (0.001), v2 with an L1 penalty (0.01) that "
            "zeroes x4 and x5")
    out.print(f"demo: registering model {args.model!r} at {api.url}: {plan}; their training "
              "figures, weights per feature and a reference of 5,000 rows")
    versions = setup(api, args.model, args.clean, rng)
    incident_after = args.duration / 2 if args.incident_after is None else args.incident_after
    per_second = args.speed * args.batch_size
    out.print(f"demo: {_clock(0)} steady traffic: {per_second:.0f} predictions/s to v2 (70%) "
              "and v1 (30%) with latencies, 80% of them labelled a batch later")
    if args.clean:
        out.print(f"demo: no incident (--clean): nothing should page; ends at "
                  f"{_clock(args.duration)}")
    elif incident_after < args.duration:
        out.print(f"demo: {_clock(incident_after)} incident: x0 and x1 drift, scores become "
                  "over-confident, region north's labels contradict the model, 30% labelled; "
                  f"ends at {_clock(args.duration)}")
        out.print("demo: x4 drifts too (v2 gives it no weight: a ticket for v2, not a page); "
                  "production error rises above each version's validation error")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                        TextColumn("of " + _clock(args.duration)),
                        TextColumn("{task.fields[sent]}"), console=out)
    start = time.monotonic()
    pending: list[dict] = []
    seq = n_predictions = n_labels = 0
    announced = False
    with progress:
        task = progress.add_task("steady", total=args.duration, sent="")
        while (elapsed := time.monotonic() - start) < args.duration:
            incident = not args.clean and elapsed >= incident_after
            if incident and not announced:
                progress.console.print(f"demo: {_clock(elapsed)} incident injected")
                progress.update(task, description="incident")
                announced = True
            records, labels = batch(args.model, versions, rng, args.batch_size, seq, incident)
            api.post("/v1/predictions", {"records": records})
            n_predictions += len(records)
            if pending:  # labels arrive one batch later
                api.post("/v1/labels", {"records": pending})
                n_labels += len(pending)
            pending = labels
            seq += 1
            progress.update(task, completed=min(time.monotonic() - start, args.duration),
                            sent=f"{n_predictions:,} predictions, {n_labels:,} labels")
            time.sleep(max(0.0, 1.0 / args.speed))
        progress.update(task, completed=args.duration)
    out.print(f"demo: sent {n_predictions:,} predictions in {seq} batches and {n_labels:,} "
              "labels")
    return _finish(args, out, api.url, {
        "model": args.model, "url": api.url, "versions": list(versions),
        "predictions": n_predictions, "labels": n_labels, "batches": seq,
        "incident": not args.clean and incident_after < args.duration})


def _finish(args: argparse.Namespace, out: Any, url: str, summary: dict[str, Any]) -> int:
    steps = next_steps(args.model, url, args.clean)
    if args.json:
        print(json.dumps({**summary, "next": steps}))
        return 0
    out.print("demo: what to look at next (reports show the traffic once its 5-minute "
              "bucket closes; ask for --start/--end to see it at once):")
    for step in steps:
        out.print(f"  {step}")
    return 0


def next_steps(model: str, url: str, clean: bool) -> list[str]:
    """Where the demo's story shows: the reports, the pages, the metrics and the runbooks."""
    where = f"--model {model} --url {url}"
    cmd = _program()
    steps = [f"{cmd} report drift {where}: PSI and KS per feature, with each feature's "
             "importance and whether its decision pages or only tickets"
             + ("" if clean else " (x4: critical, but v2 gives it no weight: a ticket)"),
             f"{cmd} report cohorts {where}: error per region and the generalization gap "
             "against each version's validation error",
             f"{cmd} report calibration {where}: ECE and the reliability bins",
             f"{cmd} report compare {where} --base v1 --candidate v2: weights, sparsity "
             "and the features v2 zeroed",
             f"{url}/ui/models/{quote(model, safe='')}/versions/v2: the same reports as a page "
             "(tables and pictures; /ui lists every model)",
             f"{url}/metrics: what Prometheus scrapes; dashboards/ for Grafana and "
             "docs/runbooks.md for what each alert means and what to do"]
    return steps


def _program() -> str:
    """The command as it can be typed again: ``modelmon`` where it is on PATH, else the path
    it was run by (``.venv/bin/modelmon`` in a checkout whose venv is not activated)."""
    run_as = sys.argv[0]
    if Path(run_as).name != "modelmon" or shutil.which("modelmon"):
        return "modelmon"
    return run_as


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="stream a demo scenario through the API")
    add_connection_args(p)
    p.add_argument("--model", default="demo-fraud", help="the demo model's name")
    p.add_argument("--duration", type=float, default=180.0, help="seconds of traffic")
    p.add_argument("--speed", type=float, default=2.0, help="batches per second")
    p.add_argument("--batch-size", type=int, default=200, help="predictions per batch")
    p.add_argument("--incident-after", type=float, default=None,
                   help="seconds before the incident (default: half the duration)")
    p.add_argument("--clean", action="store_true",
                   help="no incident and no regularization jump: nothing should page")
    p.add_argument("--seed", type=int, default=7, help="random seed of the traffic")
    add_json(p, "print a JSON summary (what was sent, what to look at next) on stdout; the "
             "progress goes to stderr")
    p.set_defaults(func=run)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
