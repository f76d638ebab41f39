"""Reference profiles: what a window is compared with.

A profile holds, per feature and for the prediction, the binning fitted once on the
reference, the reference counts on those bins, and a bounded sorted sample for KS. The
sample is the reference's evenly spaced order statistics (at most ``sample_size``), so its
empirical CDF is within 1/sample_size of the full reference's everywhere and KS D computed
against it is within that of D against the full reference; the reported n_reference is the
sample size, so p-values are honest about it. Beside the columns, ``multivariate`` holds the
PCA basis of multivariate drift fitted on the numeric features, with the reference's own
reconstruction error distribution (app/monitoring/multivariate.py), or why there is none.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import numpy as np
from sqlalchemy import Connection

from app.evaluation.embeddings import embeddings_profile
from app.evaluation.summaries import (
    CompiledProfile,
    ModelShape,
    Rows,
    prediction_values,
    profile_key,
)
from app.monitoring import fit_categorical_bins, fit_numeric_bins, sorted_sample
from app.monitoring.multivariate import fit_pca_basis
from app.storage import profiles as profile_store
from app.storage.registry import ModelRow


def column_profile(kind: str, values: np.ndarray, *, n_bins: int, sample_size: int,
                   max_categories: int) -> dict[str, Any]:
    if kind == "numeric":
        s = sorted_sample(values)
        binning = fit_numeric_bins(s, n_bins)
        if s.n_valid > sample_size:
            idx = np.linspace(0, s.n_valid - 1, sample_size).round().astype(np.int64)
            sample = s.values[idx]
        else:
            sample = s.values
        return {"type": "numeric", "binning": binning.to_dict(),
                "counts": binning.counts(s).tolist(), "n_valid": s.n_valid,
                "n_missing": s.n_missing, "sample": sample.tolist()}
    binning = fit_categorical_bins(values, max_categories)
    counts = binning.counts(values)
    return {"type": "categorical", "binning": binning.to_dict(), "counts": counts.tolist(),
            "n_valid": int(counts[:-1].sum()), "n_missing": int(counts[-1])}


def build_profile(model: ModelRow, columns: dict[str, np.ndarray],
                  prediction: tuple[str, np.ndarray] | None, n_rows: int, *, n_bins: int = 10,
                  sample_size: int = 10_000, max_categories: int = 50) -> dict[str, Any]:
    opts = {"n_bins": n_bins, "sample_size": sample_size, "max_categories": max_categories}
    features = {}
    for f in model.features:
        name = f["name"]
        if f["type"] == "embedding":
            continue  # no PSI or KS column: its basis is in ``embeddings``
        values = columns.get(name)
        if values is None:
            values = (np.full(n_rows, np.nan) if f["type"] == "numeric"
                      else np.full(n_rows, None, dtype=object))
        features[name] = column_profile(f["type"], values, **opts)
    out: dict[str, Any] = {"n_rows": n_rows, "features": features, "prediction": None,
                           "multivariate": multivariate_profile(model, columns, n_rows),
                           "embeddings": embeddings_profile(model.features, columns, n_rows)}
    if prediction is not None and prediction[1].shape[0] > 0:
        out["prediction"] = column_profile(prediction[0], prediction[1], **opts)
    return out


def multivariate_profile(model: ModelRow, columns: dict[str, np.ndarray], n_rows: int
                         ) -> dict[str, Any]:
    """The PCA basis of multivariate drift over the numeric features (app/monitoring/
    multivariate.py), or None and why."""
    names = tuple(f["name"] for f in model.features if f["type"] == "numeric")
    x = np.full((n_rows, len(names)), np.nan)
    for j, name in enumerate(names):
        values = columns.get(name)
        if values is not None:
            x[:, j] = np.array([np.nan if v is None else v for v in values], np.float64) \
                if values.dtype == object else np.asarray(values, np.float64)
    basis, reason = fit_pca_basis(names, x)
    return {"basis": None if basis is None else basis.to_dict(), "reason": reason}


def profile_from_rows(model: ModelRow, rows: Rows, **opts: Any) -> dict[str, Any]:
    shape = ModelShape.of(model)
    return build_profile(model, rows.features, prediction_values(shape, rows), rows.n, **opts)


# What the compiled profiles of one process may hold: a 50-feature version with a 10,000-row
# reference takes about 12 MB (its KS samples and points), a small one a few kB; past this the
# least recently used is compiled again when next asked for.
PROFILE_CACHE_BYTES = 256 * 2**20


def _arrays(obj: Any) -> int:
    """The bytes of the numpy arrays a dataclass holds directly."""
    return sum(v.nbytes for f in fields(obj)
               if isinstance(v := getattr(obj, f.name), np.ndarray))


def footprint(cp: CompiledProfile) -> int:
    """About the bytes ``cp`` holds: its arrays (the numeric columns' KS samples and points,
    the bulk; the PCA and embedding bases), and a few kB a column for the rest (bins,
    counts, names)."""
    held = [c.ks for c in cp.columns if c.ks is not None]
    held += [cp.pca] if cp.pca is not None else []
    held += [lay.basis for lay in cp.embeddings.layouts]
    return sum(_arrays(x) for x in held) + 4096 * (len(cp.columns) + 1)


class ProfileCache:
    """Stored profiles compiled once per process, for ingest and the jobs: a profile is
    reloaded only when its stamp (the time it was stored) changes. At most ``max_bytes``
    (``footprint``) are kept, the least recently used version dropped first (never the one
    just compiled), so a process that serves many versions does not grow with them."""

    def __init__(self, max_bytes: int = PROFILE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._compiled: OrderedDict[int, tuple[CompiledProfile, int]] = OrderedDict()
        self._bytes = 0
        self._seen: dict[frozenset[int], tuple[float, dict[int, CompiledProfile]]] = {}
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def held(self) -> dict[int, CompiledProfile]:
        """The compiled profiles kept now, by version id, least recently used first."""
        with self._lock:
            return {vid: cp for vid, (cp, _) in self._compiled.items()}

    def recent(self, conn: Connection, version_ids: Iterable[int],
               max_age: float) -> dict[int, CompiledProfile]:
        """``get``, answered from memory when asked for the same versions within
        ``max_age`` seconds (the ingest path: a profile stored meanwhile is picked up a
        moment later, and the buckets counted on the old one are summarised again)."""
        key = frozenset(version_ids)
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(key)
        if hit is not None and now - hit[0] < max_age:
            return hit[1]
        out = self.get(conn, key)
        with self._lock:
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = (now, out)
        return out

    def get(self, conn: Connection, version_ids: Iterable[int]) -> dict[int, CompiledProfile]:
        stamps = profile_store.profile_stamps(conn=conn, version_ids=set(version_ids))
        out: dict[int, CompiledProfile] = {}
        for vid, created_at in stamps.items():
            key = profile_key(vid, created_at.isoformat())
            with self._lock:
                held = self._compiled.get(vid)
                if held is not None:
                    self._compiled.move_to_end(vid)
            cp = None if held is None else held[0]
            if cp is None or cp.key != key:
                stored = profile_store.get_profile(conn=conn, version_id=vid)
                if stored is None:
                    continue
                cp = CompiledProfile.compile(
                    stored["profile"], profile_key(vid, stored["created_at"].isoformat()))
                self._keep(vid, cp)
            out[vid] = cp
        return out

    def _keep(self, vid: int, cp: CompiledProfile) -> None:
        """Hold ``cp`` as ``vid``'s, then drop the least recently used versions (and the
        recent answers that hold them) until the cache is within its bytes."""
        size = footprint(cp)
        with self._lock:
            old = self._compiled.pop(vid, None)
            self._bytes += size - (0 if old is None else old[1])
            self._compiled[vid] = (cp, size)
            dropped = set()
            while self._bytes > self.max_bytes and len(self._compiled) > 1:
                gone, (_, gone_size) = self._compiled.popitem(last=False)
                self._bytes -= gone_size
                dropped.add(gone)
            if dropped:
                for seen in [k for k in self._seen if k & dropped]:
                    del self._seen[seen]
