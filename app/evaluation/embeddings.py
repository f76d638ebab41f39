"""Embedding features in a reference profile and in the drift summaries' layout.

A profile's ``embeddings`` section holds, per embedding feature of the version, the
whitening basis of its drift test fitted on the reference (app/monitoring/embedding.py) or
why there is none. Compiled, each basis takes 1 + k slots of the drift layout after the
multivariate sums: n, then the whole-number sums of the quantised whitened coordinates, so
they add up exactly on every summary path as every other slot does. An embedding feature has
no PSI or KS column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.monitoring.embedding import (
    EmbeddingBasis,
    embedding_matrix,
    fit_embedding_basis,
    shift_sums,
)

PREDATES = ("the reference profile predates embedding drift: upload the reference again "
            "(with ?replace=true) to fit its basis")


@dataclass(frozen=True)
class EmbeddingLayout:
    basis: EmbeddingBasis
    offset: int


@dataclass(frozen=True)
class EmbeddingLayouts:
    """The profile's embedding bases with their slots, why the others have none, and the
    layout's end."""

    layouts: tuple[EmbeddingLayout, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)
    end: int = 0

    @classmethod
    def compile(cls, profile: dict[str, Any], offset: int) -> EmbeddingLayouts:
        layouts: list[EmbeddingLayout] = []
        reasons: dict[str, str] = {}
        for name, e in (profile.get("embeddings") or {}).items():
            if e["basis"] is None:
                reasons[name] = e["reason"]
                continue
            basis = EmbeddingBasis.from_dict(e["basis"])
            layouts.append(EmbeddingLayout(basis, offset))
            offset += basis.slots
        return cls(tuple(layouts), reasons, offset)

    def of(self, name: str) -> tuple[EmbeddingLayout | None, str]:
        """The feature's layout, or None and why."""
        for lay in self.layouts:
            if lay.basis.feature == name:
                return lay, ""
        return None, self.reasons.get(name, PREDATES)

    def counts(self, features: dict[str, Any], n: int
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(slots, counts) of ``n`` rows' vectors (``features``: Rows.features), non-zero
        slots only."""
        keys: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        for lay in self.layouts:
            b = lay.basis
            sums = shift_sums(b, embedding_matrix(features.get(b.feature), n, b.dim))
            nz = np.flatnonzero(sums)
            keys.append(nz + lay.offset)
            counts.append(sums[nz])
        return keys, counts


def vector_column(values: list[Any], n: int) -> np.ndarray:
    """An embedding's vectors as rows x dim floats (dim: the first vector's length; NaN rows
    where one is missing or of another length)."""
    return embedding_matrix(values, n, next((len(v) for v in values if v is not None), 0))


def embeddings_profile(features: list[dict[str, Any]], columns: dict[str, Any], n_rows: int
                       ) -> dict[str, Any]:
    """Per embedding feature: its basis fitted on the reference's vectors, or None and why."""
    out: dict[str, Any] = {}
    for f in features:
        if f["type"] != "embedding":
            continue
        x = embedding_matrix(columns.get(f["name"]), n_rows, int(f["dim"]))
        basis, reason = fit_embedding_basis(f["name"], x)
        out[f["name"]] = {"basis": None if basis is None else basis.to_dict(),
                          "reason": reason}
    return out


def arrow_vectors(arr: pa.Array | None, n: int, dim: int | None = None
                  ) -> tuple[np.ndarray, str]:
    """An Arrow list column (list, large_list or fixed_size_list of numbers) as rows x dim
    floats, NaN rows where a vector is null; and what is wrong with it ('' when nothing):
    not a list of numbers, vectors of another length than ``dim`` (or than the first's),
    non-finite elements."""
    if arr is None:
        return np.full((n, dim or 0), np.nan), ""
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)
            or pa.types.is_fixed_size_list(t)):
        return np.empty((n, 0)), f"must be a list of numbers (an embedding), not {t}"
    present = (arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count
               else np.ones(n, dtype=bool))
    sub = arr.filter(arr.is_valid()) if arr.null_count else arr  # a null's slots skipped
    lengths = pc.list_value_length(sub).to_numpy(zero_copy_only=False)
    if dim is None:
        dim = int(lengths[0]) if len(lengths) else 0
    if dim == 0 or not len(lengths):
        return np.full((n, dim), np.nan), ""
    if (lengths != dim).any():
        return np.empty((n, 0)), f"has vectors of another length than {dim}"
    try:
        flat = pc.cast(pc.list_flatten(sub), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.empty((n, 0)), f"must be a list of numbers, not {t}"
    values = flat.to_numpy(zero_copy_only=False).reshape(-1, dim)
    if not np.isfinite(values).all():
        return np.empty((n, 0)), "has null or non-finite numbers inside a vector"
    out = np.full((n, dim), np.nan)
    out[present] = values
    return out, ""
