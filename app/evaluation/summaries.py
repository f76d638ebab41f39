"""Per-bucket summaries: every prediction folded once into small, mergeable sums.

A bucket is one version's predictions whose timestamps fall in one clock-aligned interval of
``bucket_seconds`` (the job interval). Two kinds of summary exist per bucket:

- ``DriftSummary`` (depends on the reference profile, and records which one): per feature
  and for the prediction, counts in the profile's PSI bins (missing last) and, for numeric
  columns, counts of values at and strictly between the points of the profile's KS sample
  (``app.monitoring.KsPoints``), which give KS D and p against that sample exactly.
- ``OutcomeSummary`` (independent of the profile): the number of predictions, and over the
  labeled ones (pairs of a prediction and its ground truth) the calibration sums per fine
  confidence slot, the per-class label counts, the per-cohort error sums (and, for a
  classifier, each cohort's sum of scores and count of positives, and the confusion counts:
  predicted class by label) and a KLL sketch of the label delays.

Both add up element-wise, so a window of any length is the sum of its buckets, and the
statistics in ``app.monitoring`` compute from the sums exactly what they compute from rows.
Nothing here does I/O: ``Rows`` holds columns (from an ingest batch or from stored rows) and
app/evaluation/packing.py turns a summary into bytes and back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

from app.evaluation import cbpe
from app.evaluation.embeddings import EmbeddingLayouts, vector_column
from app.monitoring import CalibrationSums, CohortSums, KsPoints, binning_from_dict, multiclass_sums
from app.monitoring.binning import (
    CategoricalBinning,
    Coded,
    NumericBinning,
    categorical_codes,
)
from app.monitoring.cbpe import CbpeSums, IsotonicMap, added_confusion, confusion_counts
from app.monitoring.cohort import cohort_groups
from app.monitoring.multivariate import SUM_SLOTS, PcaBasis
from app.monitoring.slots import ColumnsCounter, SlotCounter
from app.monitoring.wrong import wrong

KLL_K = 200
# Normalised rank error of a KLL sketch with k = 200 (single quantile, 99% confidence).
KLL_RANK_ERROR = kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)
OTHER_COHORT = "(other)"


def bucket_starts(ts: np.ndarray, bucket_seconds: float) -> np.ndarray:
    """Start (epoch seconds) of the bucket holding each timestamp."""
    return np.floor(ts / bucket_seconds) * bucket_seconds


def profile_key(version_id: int, created_at: str) -> str:
    """Identifies one stored profile of a version: summaries built against another are stale."""
    return hashlib.sha1(f"{version_id}:{created_at}".encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- columns


@dataclass
class Rows:
    """Predictions as columns, one entry per row. ``label`` is the ground truth as a number
    (0/1 for binary, class index for multiclass, value for regression), NaN where the row is
    not (yet) paired with a label; ``label_delay`` the label time minus the prediction time."""

    version_id: np.ndarray
    ts: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    cohorts: dict[str, np.ndarray] = field(default_factory=dict)
    score: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    value: np.ndarray | None = None
    label: np.ndarray | None = None
    label_delay: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: np.ndarray) -> Rows:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]
        return Rows(
            version_id=self.version_id[index], ts=self.ts[index],
            features={k: v[index] for k, v in self.features.items()},
            cohorts={k: v[index] for k, v in self.cohorts.items()},
            score=pick(self.score), probabilities=pick(self.probabilities),
            value=pick(self.value), label=pick(self.label), label_delay=pick(self.label_delay))


@dataclass(frozen=True)
class ModelShape:
    """What summarising needs from a model's definition."""

    task: str
    features: tuple[tuple[str, str], ...]  # (name, numeric | categorical)
    cohort_keys: tuple[str, ...]
    classes: tuple[str, ...]

    @classmethod
    def of(cls, model: Any) -> ModelShape:
        return cls(model.task, tuple((f["name"], f["type"]) for f in model.features),
                   tuple(model.cohort_keys), tuple(model.classes or ()))


def rows_from_records(shape: ModelShape, version_id: list[int], ts: list[float],
                      features: list[dict[str, Any]], cohorts: list[dict[str, Any]],
                      score: list[float | None], value: list[float | None],
                      probabilities: list[dict[str, float] | None],
                      label_class: list[str | None], label_value: list[float | None],
                      label_ts: list[float | None]) -> Rows:
    """Columns from per-row Python values (ingest batches and stored rows alike)."""
    n = len(ts)
    out = Rows(version_id=np.asarray(version_id, dtype=np.int64),
               ts=np.asarray(ts, dtype=np.float64))
    numeric = [name for name, kind in shape.features if kind == "numeric"]
    if numeric:  # one pass over the rows; None becomes NaN in the float conversion
        table = np.array([[d.get(name) for name in numeric] for d in features],
                         dtype=np.float64).reshape(n, len(numeric))
        for j, name in enumerate(numeric):
            out.features[name] = table[:, j]
    for name, kind in shape.features:
        if kind == "embedding":
            out.features[name] = vector_column([d.get(name) for d in features], n)
        elif kind != "numeric":
            out.features[name] = np.array([d.get(name) for d in features], dtype=object)
    for key in shape.cohort_keys:
        out.cohorts[key] = np.array([c.get(key) for c in cohorts], dtype=object)
    if shape.task == "binary_classification":
        out.score = np.array([np.nan if s is None else s for s in score], dtype=np.float64)
    elif shape.task == "regression":
        out.value = np.array([np.nan if v is None else v for v in value], dtype=np.float64)
    else:
        out.probabilities = np.array(
            [[(p or {}).get(c, 0.0) for c in shape.classes] for p in probabilities],
            dtype=np.float64).reshape(n, len(shape.classes))
    out.label = label_numbers(shape, label_class, label_value)
    out.label_delay = np.array([np.nan if lt is None else lt - t
                                for lt, t in zip(label_ts, ts, strict=True)], np.float64)
    return out


def label_numbers(shape: ModelShape, label_class: list[str | None],
                  label_value: list[float | None]) -> np.ndarray:
    """Ground truth as numbers (Rows.label): the value (regression), 0/1 (binary), the class
    index (multiclass); NaN where there is none."""
    if shape.task == "regression":
        return np.array([np.nan if v is None else v for v in label_value], np.float64)
    index = {c: float(i) for i, c in enumerate(shape.classes)}
    if shape.task == "binary_classification":
        index = {c: float(c == shape.classes[1]) for c in shape.classes}
    return np.array([np.nan if c is None else index.get(c, np.nan) for c in label_class],
                    dtype=np.float64)


def prediction_values(shape: ModelShape, rows: Rows) -> tuple[str, np.ndarray | Coded]:
    """(kind, values) of the prediction column drift is measured on: the score (binary), the
    value (regression) or the top class (multiclass; ties to the first class)."""
    if shape.task == "binary_classification":
        return "numeric", rows.score if rows.score is not None else np.empty(0)
    if shape.task == "regression":
        return "numeric", rows.value if rows.value is not None else np.empty(0)
    if rows.probabilities is None or rows.probabilities.shape[0] == 0:
        return "categorical", np.empty(0, dtype=object)
    keys = tuple(sorted(set(shape.classes)))
    rank = np.array([keys.index(c) for c in shape.classes], dtype=np.int64)
    return "categorical", Coded(keys, rank[np.argmax(rows.probabilities, axis=1)])


# --------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class ColumnLayout:
    name: str
    kind: str
    binning: NumericBinning | CategoricalBinning
    reference_counts: tuple[int, ...]
    n_reference_valid: int
    n_reference_missing: int
    psi_offset: int
    ks: KsPoints | None
    ks_offset: int
    is_prediction: bool = False

    @property
    def psi_slots(self) -> int:
        return self.binning.n_bins

    @cached_property
    def slot_counter(self) -> SlotCounter | None:  # built for a first large batch only
        return SlotCounter(self.binning, self.ks) if self.kind == "numeric" else None

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """PSI bin of each value, missing last (the binnings' own counting rules)."""
        b = self.binning
        if isinstance(b, NumericBinning):
            x = np.asarray(values, dtype=np.float64)
            idx = np.searchsorted(np.asarray(b.edges, dtype=np.float64), x, side="left")
            return np.where(np.isfinite(x), idx, b.missing_index)
        keys, _, row_code = categorical_codes(values)
        position = {c: i for i, c in enumerate(b.categories)}
        bin_of_key = np.array([position.get(k, b.unseen_index) for k in keys] or [0],
                              dtype=np.int64)
        return np.where(row_code >= 0, bin_of_key[np.maximum(row_code, 0)], b.missing_index)


@dataclass(frozen=True)
class CompiledProfile:
    """A stored reference profile laid out as one count vector per bucket."""

    key: str
    columns: tuple[ColumnLayout, ...]  # the features in profile order, then the prediction
    size: int
    # CBPE: the reference's calibration map per scored class (app/evaluation/cbpe.py), and
    # its realized metrics; None when the reference had no labels
    cbpe: tuple[IsotonicMap, ...] | None = None
    cbpe_realized: dict[str, float | None] | None = None
    # the PCA basis of multivariate drift (app/monitoring/multivariate.py), whose error sums
    # take the layout's last SUM_SLOTS slots; None for a profile without one (and why)
    pca: PcaBasis | None = None
    pca_offset: int = 0
    pca_reason: str = ""
    # the embedding features' bases, slots after the PCA sums (app/evaluation/embeddings.py)
    embeddings: EmbeddingLayouts = EmbeddingLayouts()

    @cached_property
    def columns_counter(self) -> ColumnsCounter:
        return ColumnsCounter.of_layouts(self.columns)

    @classmethod
    def compile(cls, profile: dict[str, Any], key: str) -> CompiledProfile:
        columns: list[ColumnLayout] = []
        offset = 0
        named = [(name, col, False) for name, col in profile["features"].items()]
        if profile.get("prediction"):
            named.append(("prediction", profile["prediction"], True))
        for name, col, is_prediction in named:
            binning = binning_from_dict(col["binning"])
            psi_offset = offset
            offset += binning.n_bins
            ks = None
            ks_offset = offset
            if col["type"] == "numeric":
                ks = KsPoints.of(np.asarray(col["sample"], dtype=np.float64))
                offset += ks.n_slots
            columns.append(ColumnLayout(
                name=name, kind=col["type"], binning=binning,
                reference_counts=tuple(int(c) for c in col["counts"]),
                n_reference_valid=int(col["n_valid"]), n_reference_missing=int(col["n_missing"]),
                psi_offset=psi_offset, ks=ks, ks_offset=ks_offset,
                is_prediction=is_prediction))
        section = profile.get("cbpe")
        maps = {"cbpe": cbpe.maps_of(section),
                "cbpe_realized": None if not section else dict(section["realized"])}
        mv = profile.get("multivariate") or {
            "basis": None, "reason": "the reference profile predates multivariate drift: "
            "upload the reference again (with ?replace=true) to fit its PCA basis"}
        emb = EmbeddingLayouts.compile(profile, offset + (SUM_SLOTS if mv["basis"] else 0))
        if mv["basis"] is None:
            return cls(key=key, columns=tuple(columns), size=emb.end, pca_reason=mv["reason"],
                       embeddings=emb, **maps)
        return cls(key=key, columns=tuple(columns), size=emb.end, embeddings=emb,
                   pca=PcaBasis.from_dict(mv["basis"]), pca_offset=offset, **maps)


@dataclass
class DriftSummary:
    """Counts on a compiled profile's layout, and the number of rows they count."""

    profile_key: str
    n: int
    counts: np.ndarray
    cbpe: CbpeSums | None = None  # None: no CBPE maps, or sums not known (older payloads)

    def add(self, other: DriftSummary) -> None:
        if other.profile_key != self.profile_key or other.counts.shape != self.counts.shape:
            raise ValueError("drift summaries of different profiles do not add up")
        self.cbpe = cbpe.added(self.cbpe, other.cbpe)
        self.n += other.n
        self.counts += other.counts

    @classmethod
    def empty(cls, cp: CompiledProfile) -> DriftSummary:
        """Zero counts on ``cp``'s layout (and zero CBPE sums where it has maps)."""
        return cls(cp.key, 0, np.zeros(cp.size, dtype=np.int64), cbpe.empty(cp.cbpe))

    def slice(self, start: int, length: int) -> np.ndarray:
        return self.counts[start:start + length]


def group_order(group: np.ndarray, n_groups: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(an order that puts the rows group by group, keeping their order within a group, or
    None when they already are; where each group starts and ends in it). Rows in time order
    (a log, a lake file) need no sort; a few groups are gathered in a pass each."""
    if group.size < 2 or bool((group[1:] >= group[:-1]).all()):
        order = None
        ordered = group
    elif n_groups <= 64:
        order = np.concatenate([np.flatnonzero(group == g) for g in range(n_groups)])
        ordered = group[order]
    else:
        order = np.argsort(group, kind="stable")
        ordered = group[order]
    return order, np.searchsorted(ordered, np.arange(n_groups + 1))


# --------------------------------------------------------------------------- outcomes


@dataclass
class OutcomeSummary:
    """Predictions counted, and the sums of their labeled pairs. ``errors`` and ``squares``
    are the overall error sums of the ``labeled`` pairs (wrong predictions, or sums of |error|
    and error squared for regression), kept whether or not the model has cohort keys; None
    only for a summary written before they were kept that cannot give them (no cohort key).
    ``confusion``: a classifier's pairs by predicted class (rows) and label (columns); 0 x 0
    where none was counted, None where not known (pairs summarised before it was kept)."""

    n: int = 0
    labeled: int = 0
    calibration: CalibrationSums | None = None
    cohorts: dict[str, CohortSums] = field(default_factory=dict)
    delays: Any = None  # kll_doubles_sketch of label - prediction seconds, or None
    errors: float | None = 0.0
    squares: float | None = 0.0
    confusion: np.ndarray | None = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def add(self, other: OutcomeSummary) -> None:
        self.n += other.n
        self.labeled += other.labeled
        self.confusion = added_confusion(self.confusion, other.confusion)
        if self.errors is None or other.errors is None or self.squares is None \
                or other.squares is None:
            self.errors = self.squares = None
        else:
            self.errors += other.errors
            self.squares += other.squares
        if other.calibration is not None:
            if self.calibration is None:
                self.calibration = other.calibration
            else:
                a, b = self.calibration, other.calibration
                self.calibration = CalibrationSums(
                    a.count + b.count, a.confidence + b.confidence, a.outcome + b.outcome,
                    a.brier + b.brier, a.label_counts + b.label_counts)
        for key, c in other.cohorts.items():
            mine = self.cohorts.get(key)
            self.cohorts[key] = c if mine is None else mine.added(c)
        if other.delays is not None:
            if self.delays is None:
                self.delays = kll_doubles_sketch(KLL_K)
            self.delays.merge(other.delays)

    def cap_cohorts(self, max_values: int) -> None:
        """Keep the ``max_values`` largest cohorts per key; fold the rest into '(other)'."""
        for key, c in list(self.cohorts.items()):
            if len(c.cohorts) <= max_values:
                continue
            order = np.argsort(-c.n, kind="stable")
            keep, fold = order[:max_values - 1], order[max_values - 1:]
            names = [c.cohorts[i] for i in keep] + [OTHER_COHORT]
            self.cohorts[key] = CohortSums(
                tuple(names[:-1]), c.n[keep], c.first[keep], c.second[keep],
                _part(c.scores, keep), _part(c.positives, keep)).added(
                CohortSums((OTHER_COHORT,), np.array([c.n[fold].sum()]),
                           np.array([c.first[fold].sum()]), np.array([c.second[fold].sum()]),
                           _folded(c.scores, fold), _folded(c.positives, fold)))


def _part(x: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if x is None else x[idx]


def _folded(x: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if x is None else np.array([x[idx].sum()])


def _errors(shape: ModelShape, rows: Rows) -> np.ndarray:
    """Per labeled row: 0/1 wrong (classification, by the one rule the SLO counters apply:
    monitoring/wrong.py) or signed residual (regression)."""
    if shape.task == "regression":
        return rows.value - rows.label
    predicted = rows.score if shape.task == "binary_classification" else rows.probabilities
    return wrong(shape.task, predicted, rows.label)


def outcome_summary(shape: ModelShape, rows: Rows, *, count_predictions: bool
                    ) -> OutcomeSummary:
    """One summary of ``rows``: counts them as predictions when ``count_predictions`` (a
    label arriving later adds only its pair), and adds the pairs among them."""
    out = OutcomeSummary(n=rows.n if count_predictions else 0)
    if rows.label is None:
        return out
    paired = np.flatnonzero(~np.isnan(rows.label))
    if paired.size == 0:
        return out
    p = replace(rows, features={}).take(paired)  # an outcome reads no feature
    out.labeled = int(paired.size)
    y = p.label
    score = outcome = None  # per row, for each cohort's observed against expected positives
    if shape.task == "binary_classification":
        out.calibration = CalibrationSums.of(p.score, y, (p.score - y) ** 2, y, 2)
        score, outcome = p.score, y
        out.confusion = confusion_counts(2, p.score, y)
    elif shape.task == "multiclass_classification":
        out.calibration = multiclass_sums(p.probabilities, y.astype(np.intp))
        score = p.probabilities.max(axis=1)
        outcome = (np.argmax(p.probabilities, axis=1) == y).astype(np.float64)
        out.confusion = confusion_counts(len(shape.classes), p.probabilities, y)
    err = _errors(shape, p)
    task = "regression" if shape.task == "regression" else "rate"
    if task == "regression":
        out.errors, out.squares = float(np.abs(err).sum()), float((err * err).sum())
    else:
        out.errors = float(err.sum().round())
    for key in shape.cohort_keys:
        keys, _, code = categorical_codes(p.cohorts[key])
        names, group = cohort_groups(keys, code)
        out.cohorts[key] = CohortSums.of(names, group, err, task, score, outcome)
    delays = p.label_delay[~np.isnan(p.label_delay)] if p.label_delay is not None else None
    if delays is not None and delays.size:
        out.delays = kll_doubles_sketch(KLL_K)
        out.delays.update(delays)
    return out


def outcome_summaries(shape: ModelShape, rows: Rows, group: np.ndarray, n_groups: int, *,
                      count_predictions: bool) -> list[OutcomeSummary]:
    order, bounds = group_order(group, n_groups)
    ordered = rows if order is None else replace(rows, features={}).take(order)
    return [outcome_summary(shape, ordered.take(slice(bounds[g], bounds[g + 1])),
                            count_predictions=count_predictions) for g in range(n_groups)]
