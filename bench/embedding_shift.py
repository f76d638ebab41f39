"""Embedding drift (``bench_decisions.py --only embedding``, issue 26): is a mean shift of
0.5 sd along one direction of a 32-dimensional embedding flagged, and do stationary windows
stay quiet?

The world: a binary model with one embedding feature (dim 32) and its score. A vector is a
mixture of three clusters (weights 0.5, 0.3, 0.2; centres 1.5 apart on random axes) plus
anisotropic noise (standard deviations falling from 1 to 0.1 over a random rotation), so the
reference's spectrum falls off and is not normal. The reference profile is built by the
service's own ``build_profile`` from 5,000 rows; each 5-minute bucket is folded by the
service's ``drift_summaries``; a 1-hour window (12 buckets) is decided by the service's own
check (app/evaluation/checks/embedding.py, default policy). The shift adds 0.5 times the
reference's standard deviation along a direction to every vector of every bucket: along the
reference's first principal direction (its largest spread: the whitened shift is exactly
0.5) and along a random direction. Stationary: ``windows`` overlapping windows of unchanged
traffic (8,640 = 30 days in 5-minute steps); pages are runs of critical windows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy.special import expit

from app.evaluation.checks.embedding import embedding
from app.evaluation.policy import Thresholds
from app.evaluation.profiles import build_profile
from app.evaluation.summaries import (
    CompiledProfile,
    DriftSummary,
    ModelShape,
    OutcomeSummary,
    Rows,
    drift_summaries,
    prediction_values,
)
from app.evaluation.windows import MergedWindow
from app.settings import Settings
from app.storage.registry import ModelRow

BUCKETS = 12
DIM = 32
N_REFERENCE = 5_000
SEVERITY = {"ok": 0, "insufficient_data": 0, "warning": 1, "critical": 2}
T = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = ModelRow(id=5, name="emb", task="binary_classification",
                 features=[{"name": "vec", "type": "embedding", "dim": DIM}],
                 cohort_keys=[], classes=["0", "1"], created_at=T)


class World:
    """The embedding's distribution (fixed by ``seed``), its reference profile, and the
    shift directions (unit vectors with the reference's standard deviation along each)."""

    def __init__(self, seed: int) -> None:
        g = np.random.default_rng([seed, 50])
        q, _ = np.linalg.qr(g.normal(size=(DIM, DIM)))
        self.noise = q * np.geomspace(1.0, 0.1, DIM)[:, None]  # rows scaled, then rotated
        axes, _ = np.linalg.qr(g.normal(size=(DIM, 3)))
        self.centres = 1.5 * axes.T
        self.weights = np.array([0.5, 0.3, 0.2])
        self.shape = ModelShape.of(MODEL)
        ref = self.rows(np.random.default_rng([seed, 51]), N_REFERENCE, None)
        self.cp = CompiledProfile.compile(build_profile(
            MODEL, ref.features, prediction_values(self.shape, ref), ref.n), "emb")
        self.th = Thresholds.from_settings(Settings(_env_file=None))
        x = ref.features["vec"]
        cov = np.cov(x, rowvar=False)
        values, vectors = np.linalg.eigh(cov)
        first = vectors[:, -1]
        other = np.random.default_rng([seed, 52]).normal(size=DIM)
        other /= np.linalg.norm(other)
        self.directions = {
            "first principal direction": first * 0.5 * np.sqrt(values[-1]),
            "random direction": other * 0.5 * np.sqrt(other @ cov @ other)}

    def vectors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = rng.choice(3, size=n, p=self.weights)
        return self.centres[k] + rng.normal(size=(n, DIM)) @ self.noise

    def rows(self, rng: np.random.Generator, n: int, shift: np.ndarray | None) -> Rows:
        rows = Rows(version_id=np.ones(n, dtype=np.int64), ts=np.zeros(n))
        x = self.vectors(rng, n)
        rows.features["vec"] = x if shift is None else x + shift
        rows.score = expit(rng.normal(size=n))
        return rows

    def bucket(self, rng: np.random.Generator, n: int, shift: np.ndarray | None
               ) -> DriftSummary:
        rows = self.rows(rng, n, shift)
        return drift_summaries(self.shape, self.cp, rows, np.zeros(n, dtype=np.int64), 1)[0]

    def decide(self, parts: list[DriftSummary]) -> tuple[str, float | None]:
        d = DriftSummary(self.cp.key, 0, np.zeros(self.cp.size, dtype=np.int64))
        for p in parts:
            d.add(p)
        w = MergedWindow(version_id=1, start=T, end=T, outcome=OutcomeSummary(n=d.n),
                         drift=d, buckets=len(parts))
        (s,) = embedding(w, self.cp, self.th).features
        return s.decision, None if s.result is None else s.result.effect


def windows_of(world: World, n: int, windows: int, seed: int, shift: np.ndarray | None,
               bucket_sizes: Callable[[int, int], list[int]]) -> dict[str, Any]:
    """``windows`` overlapping 1-hour windows (5-minute steps): flagged and paged shares,
    pages (runs of critical windows) per 30 days, the effects' median and largest."""
    rng = np.random.default_rng([seed, n, 0 if shift is None else 1])
    sizes = bucket_sizes(n, windows + BUCKETS - 1)
    parts = [world.bucket(rng, s, shift) for s in sizes[:BUCKETS - 1]]
    worst, effects = [], []
    for i in range(windows):
        parts.append(world.bucket(rng, sizes[BUCKETS - 1 + i], shift))
        decision, effect = world.decide(parts[-BUCKETS:])
        parts = parts[-(BUCKETS - 1):]
        worst.append(SEVERITY[decision])
        if effect is not None:
            effects.append(effect)
    runs = sum(1 for i, s in enumerate(worst) if s >= 2 and (i == 0 or worst[i - 1] < 2))
    w = np.array(worst)
    return {"n": n, "windows": windows, "flagged": float(np.mean(w >= 1)),
            "paged": float(np.mean(w >= 2)), "pages": runs,
            "pages_per_30d": runs / windows * 8640,
            "median_effect": float(np.median(effects)) if effects else None,
            "max_effect": max(effects) if effects else None}


def run(sizes: list[int], shift_windows: int, stationary_windows: int, seed: int,
        pct: Callable[[float], str], bucket_sizes: Callable[[int, int], list[int]]
        ) -> dict[str, Any]:
    """Both tables, printed; ``pct`` and ``bucket_sizes`` are bench_decisions.py's."""
    world = World(seed)
    lay = world.cp.embeddings.layouts[0]
    print(f"\nEmbedding drift: dim {DIM}, reference {N_REFERENCE:,} rows (basis: "
          f"{lay.basis.components} directions, {100 * lay.basis.explained:.1f}% of the "
          f"variance, {lay.basis.n_reference:,} held-out rows); {shift_windows} windows per n, "
          "every bucket shifted by 0.5 sd; flagged / paged; median effect (sd)")
    print("| case | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    out: dict[str, Any] = {"shifted": [], "stationary": []}
    for label, shift in world.directions.items():
        cells = []
        for n in sizes:
            r = windows_of(world, n, shift_windows, seed, shift, bucket_sizes)
            out["shifted"].append({"case": label, **r})
            cells.append(f"{pct(r['flagged'])} / {pct(r['paged'])}; "
                         f"{r['median_effect']:.2f}")
        print(f"| 0.5 sd along the {label} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nEmbedding drift, stationary: {stationary_windows} overlapping 1-hour windows per "
          "n; flagged / paged; pages in the run; largest effect (sd)")
    print("| world | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    cells = []
    for n in sizes:
        r = windows_of(world, n, stationary_windows, seed, None, bucket_sizes)
        out["stationary"].append(r)
        eff = "-" if r["max_effect"] is None else f"{r['max_effect']:.3f}"
        cells.append(f"{pct(r['flagged'])} / {pct(r['paged'])}; {r['pages']}; {eff}")
    print("| stationary | " + " | ".join(cells) + " |", flush=True)
    return out
