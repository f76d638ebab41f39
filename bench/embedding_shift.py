"""Embedding drift (``bench_decisions.py --only embedding``, issue 26): is a mean shift of
0.5 sd along one direction of a 32-dimensional embedding flagged, and do stationary windows
stay quiet?

The world: a binary model with one embedding feature (dim 32) and its score. A vector is a
mixture of three clusters (weights 0.5, 0.3, 0.2; centres 1.5 apart on random axes) plus
anisotropic noise (standard deviations falling from 1 to 0.1 over a random rotation), so the
reference's spectrum falls off and is not normal. The reference profile is built by the
service's own ``build_profile`` from 5,000 rows; each 5-minute bucket is folded by the
service's ``drift_summaries``; a 1-hour window (12 buckets) is decided by the service's own
check (app/evaluation/checks/embedding.py, default policy) and, where the check finds the
window too small (below ``min_n`` or the minimum support), over the longer horizon
(``MODELMON_JOB_LONG_WINDOW_SECONDS``, 24 hours: 288 buckets ending at the same boundary)
by the service's own rule (app/evaluation/horizon.py), as the drift job does. The shift adds
0.5 times the reference's standard deviation along a direction to every vector of every
bucket (the 24 hours before the window included): along the reference's first principal
direction (its largest spread: the whitened shift is exactly 0.5) and along a random
direction. Onset: 24 hours unchanged, then the shift from one bucket on; the hours from the
onset to the first flagged and the first paged window. Stationary: ``windows`` overlapping
windows of unchanged traffic (8,640 = 30 days in 5-minute steps); pages are runs of critical
windows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy.special import expit

from app.evaluation import horizon
from app.evaluation.checks.embedding import (
    EmbeddingReport,
    EmbeddingSubject,
    embedding,
    min_support,
)
from app.evaluation.counting import drift_summaries
from app.evaluation.policy import Thresholds
from app.evaluation.profiles import build_profile
from app.evaluation.summaries import (
    CompiledProfile,
    DriftSummary,
    ModelShape,
    OutcomeSummary,
    Rows,
    prediction_values,
)
from app.evaluation.windows import MergedWindow
from app.settings import Settings
from app.storage.registry import ModelRow

BUCKETS = 12
LONG = round(Settings(_env_file=None).job_long_window_seconds / 300)  # the horizon's buckets
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

    def report(self, counts: np.ndarray) -> EmbeddingReport:
        d = DriftSummary(self.cp.key, int(counts[self.cp.embeddings.layouts[0].offset]),
                         counts.copy())
        w = MergedWindow(version_id=1, start=T, end=T, outcome=OutcomeSummary(n=d.n),
                         drift=d, buckets=1)
        return embedding(w, self.cp, self.th)

    def decide(self, short: np.ndarray, long: np.ndarray | None) -> EmbeddingSubject:
        """The feature's decision as the drift job makes it: over the window's counts, or,
        where the check finds the window too small, over the longer horizon's (``long``;
        None: not yet 24 hours of history)."""
        report = self.report(short)
        if long is not None and horizon.EMBEDDING.too_small(report):
            report, moved = horizon.EMBEDDING.split(report, self.report(long), LONG * 300.0)
            if moved.features:
                return moved.features[0]
        (s,) = report.features
        return s


class Traffic:
    """Buckets in time order, with the running counts of the last hour and the last 24."""

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.world, self.rng = world, rng
        self.parts: list[np.ndarray] = []
        self.short = np.zeros(world.cp.size, dtype=np.int64)
        self.long = np.zeros(world.cp.size, dtype=np.int64)

    def add(self, n: int, shift: np.ndarray | None) -> None:
        c = self.world.bucket(self.rng, n, shift).counts
        self.parts.append(c)
        self.short += c
        self.long += c
        if len(self.parts) > BUCKETS:
            self.short -= self.parts[-BUCKETS - 1]
        if len(self.parts) > LONG:
            self.long -= self.parts[-LONG - 1]
            self.parts = self.parts[-LONG:]

    def decide(self) -> EmbeddingSubject:
        return self.world.decide(self.short, self.long if len(self.parts) >= LONG else None)


def windows_of(world: World, n: int, windows: int, seed: int, shift: np.ndarray | None,
               bucket_sizes: Callable[[int, int], list[int]]) -> dict[str, Any]:
    """``windows`` overlapping 1-hour windows (5-minute steps) after 24 hours of the same
    traffic: flagged and paged shares, pages (runs of critical windows) per 30 days, the
    decided effects' median and largest, the windows decided over the longer horizon."""
    rng = np.random.default_rng([seed, n, 0 if shift is None else 1])
    sizes = bucket_sizes(n, windows + LONG - 1)
    traffic = Traffic(world, rng)
    for size in sizes[:LONG - 1]:
        traffic.add(size, shift)
    worst, effects, longer = [], [], 0
    for i in range(windows):
        traffic.add(sizes[LONG - 1 + i], shift)
        s = traffic.decide()
        worst.append(SEVERITY[s.decision])
        longer += s.horizon_seconds is not None
        if s.result is not None and s.result.effect is not None:
            effects.append(s.result.effect)
    runs = sum(1 for i, s in enumerate(worst) if s >= 2 and (i == 0 or worst[i - 1] < 2))
    w = np.array(worst)
    return {"n": n, "windows": windows, "flagged": float(np.mean(w >= 1)),
            "paged": float(np.mean(w >= 2)), "pages": runs,
            "pages_per_30d": runs / windows * 8640, "longer_horizon": longer / windows,
            "median_effect": float(np.median(effects)) if effects else None,
            "max_effect": max(effects) if effects else None}


def onset(world: World, n: int, seed: int, shift: np.ndarray,
          bucket_sizes: Callable[[int, int], list[int]], hours: int = 36) -> dict[str, Any]:
    """24 hours unchanged, then every bucket shifted: the hours from the onset to the first
    flagged and the first paged window (None: not within ``hours``)."""
    rng = np.random.default_rng([seed, n, 2])
    sizes = bucket_sizes(n, LONG + 12 * hours)
    traffic = Traffic(world, rng)
    for size in sizes[:LONG]:
        traffic.add(size, None)
    first: dict[str, float | None] = {"flagged": None, "paged": None}
    for i, size in enumerate(sizes[LONG:]):
        traffic.add(size, shift)
        sev = SEVERITY[traffic.decide().decision]
        for key, level in (("flagged", 1), ("paged", 2)):
            if sev >= level and first[key] is None:
                first[key] = (i + 1) / 12
        if first["paged"] is not None:
            break
    return {"n": n, **first}


def _hours(h: float | None) -> str:
    return "-" if h is None else f"{h:.2f} h"


def run(sizes: list[int], shift_windows: int, stationary_windows: int, seed: int,
        pct: Callable[[float], str], bucket_sizes: Callable[[int, int], list[int]]
        ) -> dict[str, Any]:
    """The tables, printed; ``pct`` and ``bucket_sizes`` are bench_decisions.py's."""
    world = World(seed)
    lay = world.cp.embeddings.layouts[0]
    print(f"\nEmbedding drift: dim {DIM}, reference {N_REFERENCE:,} rows (basis: "
          f"{lay.basis.components} directions, {100 * lay.basis.explained:.1f}% of the "
          f"variance, {lay.basis.n_reference:,} held-out rows; minimum support "
          f"{min_support(lay.basis, world.th)}); {shift_windows} windows per n, every bucket "
          "shifted by 0.5 sd; flagged / paged; median effect (sd); share decided over 24 h")
    print("| case | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    out: dict[str, Any] = {"min_support": min_support(lay.basis, world.th), "shifted": [],
                           "onset": [], "stationary": []}
    for label, shift in world.directions.items():
        cells = []
        for n in sizes:
            r = windows_of(world, n, shift_windows, seed, shift, bucket_sizes)
            out["shifted"].append({"case": label, **r})
            cells.append(f"{pct(r['flagged'])} / {pct(r['paged'])}; "
                         f"{r['median_effect']:.2f}; {pct(r['longer_horizon'])}")
        print(f"| 0.5 sd along the {label} | " + " | ".join(cells) + " |", flush=True)
    print("\nEmbedding drift, onset: 24 hours unchanged, then every bucket shifted by 0.5 sd; "
          "hours from the onset to the first flagged / first paged window")
    print("| case | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    for label, shift in world.directions.items():
        cells = []
        for n in sizes:
            r = onset(world, n, seed, shift, bucket_sizes)
            out["onset"].append({"case": label, **r})
            cells.append(f"{_hours(r['flagged'])} / {_hours(r['paged'])}")
        print(f"| 0.5 sd along the {label} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nEmbedding drift, stationary: {stationary_windows} overlapping 1-hour windows per "
          "n; flagged / paged; pages in the run; largest decided effect (sd); share decided "
          "over 24 h")
    print("| world | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    cells = []
    for n in sizes:
        r = windows_of(world, n, stationary_windows, seed, None, bucket_sizes)
        out["stationary"].append(r)
        eff = "-" if r["max_effect"] is None else f"{r['max_effect']:.3f}"
        cells.append(f"{pct(r['flagged'])} / {pct(r['paged'])}; {r['pages']}; {eff}; "
                     f"{pct(r['longer_horizon'])}")
    print("| stationary | " + " | ".join(cells) + " |", flush=True)
    return out
