"""A model's registered contract as ingest checks it (ModelSchema), and the limits of one
batch (Limits): what the complete validator and the decode fast path both read."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from app.storage.registry import ModelRow


@dataclass(frozen=True)
class Limits:
    now: datetime
    max_future: timedelta
    max_past: timedelta
    sum_tolerance: float
    # The service-wide unknown-feature policy (MODELMON_UNKNOWN_FEATURES); a model's own
    # policy overrides it (ModelSchema.unknown_features).
    unknown_features: str = "reject"


@dataclass(frozen=True)
class ModelSchema:
    """A model's registered contract, compiled once per request for fast per-record checks."""

    row: ModelRow
    feature_types: dict[str, str]
    cohort_keys: frozenset[str]
    classes: frozenset[str] | None
    versions: dict[str, int]
    unknown_features: str | None = None  # the model policy's, when it sets one
    # version id -> its own feature types, for the versions that declared their own list
    version_features: dict[int, dict[str, str]] = field(default_factory=dict)
    # embedding feature -> its vector's length (a name keeps its dim across versions)
    dims: dict[str, int] = field(default_factory=dict)

    def types_of(self, version_id: int | None) -> dict[str, str]:
        """The features a record of this version is validated against."""
        return self.version_features.get(version_id, self.feature_types) \
            if version_id is not None else self.feature_types

    def declares(self, name: str) -> bool:
        """Whether the model or any of its versions declares the feature."""
        return name in self.feature_types or any(
            name in t for t in self.version_features.values())

    @property
    def summary_row(self) -> ModelRow:
        """The model with every feature any of its versions declares, in a stable order: the
        columns built for the summaries, of which each version's profile takes its own."""
        if not self.version_features:
            return self.row
        union = dict(self.feature_types)
        for vid in sorted(self.version_features):
            for name, kind in self.version_features[vid].items():
                union.setdefault(name, kind)
        return replace(self.row, features=[
            {"name": n, "type": k, **({"dim": self.dims[n]} if n in self.dims else {})}
            for n, k in union.items()])

    def records_unknown(self, limits: Limits) -> bool:
        """Whether undeclared features are stored (unmonitored) rather than refused."""
        return (self.unknown_features or limits.unknown_features) == "record"

    @property
    def key(self) -> tuple[Any, ...]:
        """What a decoder built from this schema depends on."""
        return (self.row.id, self.row.task, tuple(self.feature_types.items()),
                tuple(sorted(self.cohort_keys)))

    @classmethod
    def build(cls, row: ModelRow, versions: dict[str, int],
              version_features: dict[int, list[dict[str, str]]] | None = None) -> ModelSchema:
        return cls(
            row=row,
            feature_types={f["name"]: f["type"] for f in row.features},
            cohort_keys=frozenset(row.cohort_keys),
            classes=frozenset(row.classes) if row.classes is not None else None,
            versions=versions,
            unknown_features=(row.policy or {}).get("unknown_features"),
            version_features={vid: {f["name"]: f["type"] for f in fs}
                              for vid, fs in (version_features or {}).items()},
            dims={f["name"]: int(f["dim"]) for fs in [row.features,
                                                       *(version_features or {}).values()]
                  for f in fs if f["type"] == "embedding"},
        )
