"""The compiled profiles a process keeps: bounded by their bytes, least recently used dropped
first, and whatever was dropped compiled again to the same layout when next asked for."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from app.evaluation.profiles import ProfileCache, footprint
from app.storage.tables import model_versions
from tests.evaluation.test_evaluation_embedding import profile as embedding_profile
from tests.jobs_data import drift_model, reference_csv


def three_versions(client, engine) -> list[int]:
    """A model with versions v1-v3, each with its own reference of a different size."""
    assert client.post("/v1/models", json=drift_model("credit")).status_code == 201
    rng = np.random.default_rng(3)
    for i, n in enumerate((300, 600, 900), start=1):
        assert client.post("/v1/models/credit/versions", json={"version": f"v{i}"}
                           ).status_code == 201
        assert client.post(f"/v1/models/credit/versions/v{i}/reference",
                           content=reference_csv(rng, n),
                           headers={"content-type": "text/csv"}).status_code == 201
    with engine.connect() as conn:
        rows = conn.execute(select(model_versions.c.version, model_versions.c.id)).all()
    return [vid for _, vid in sorted(rows)]


def same_layout(a, b) -> bool:
    """The same columns at the same offsets, with equal KS arrays."""
    def plain(cp):
        return [(c.name, c.kind, c.psi_offset, c.ks_offset, c.reference_counts)
                for c in cp.columns]
    return (a.size == b.size and plain(a) == plain(b) and all(
        (x.ks is None) == (y.ks is None) and (x.ks is None or (
            np.array_equal(x.ks.sample, y.ks.sample) and np.array_equal(x.ks.points, y.ks.points)
            and np.array_equal(x.ks.ref_cum, y.ks.ref_cum)))
        for x, y in zip(a.columns, b.columns, strict=True)))


def test_the_footprint_counts_the_ks_arrays(client, engine):
    v1, v2, _ = three_versions(client, engine)
    with engine.connect() as conn:
        small, large = (ProfileCache().get(conn, [v])[v] for v in (v1, v2))
    ks = sum(c.ks.sample.nbytes + c.ks.points.nbytes + c.ks.ref_cum.nbytes
             for c in large.columns if c.ks is not None)
    assert ks > 0 and large.pca is not None and not large.embeddings.layouts
    pca = large.pca.mean.nbytes + large.pca.scale.nbytes + large.pca.components.nbytes
    assert footprint(large) == ks + pca + 4096 * (len(large.columns) + 1)
    assert footprint(large) > footprint(small)  # 600 reference rows against 300


def test_the_least_recently_used_profile_is_dropped_past_the_bound(client, engine):
    v1, v2, v3 = three_versions(client, engine)
    with engine.connect() as conn:
        sizes = {v: footprint(ProfileCache().get(conn, [v])[v]) for v in (v1, v2, v3)}
        cache = ProfileCache(max_bytes=sizes[v1] + sizes[v2] + sizes[v3] - 1)
        first = cache.get(conn, [v1, v2])
        assert cache.held_bytes == sizes[v1] + sizes[v2]
        assert cache.get(conn, [v1])[v1] is first[v1]  # a hit, and v1 now the most recent
        recent = cache.recent(conn, [v2], max_age=60)
        assert recent[v2] is first[v2]
        cache.get(conn, [v1])  # v2 is the least recently used again
        cache.get(conn, [v3])  # past the bound: v2 goes
        assert cache.held_bytes == sizes[v1] + sizes[v3]
        assert cache.get(conn, [v1])[v1] is first[v1]
        again = cache.get(conn, [v2])[v2]  # compiled again: the same layout, a new object
        assert again is not first[v2] and again.key == first[v2].key
        assert same_layout(again, first[v2])
        # the recent answer that held the dropped v2 went with it
        assert cache.recent(conn, [v2], max_age=60)[v2] is again
        assert cache.held_bytes <= cache.max_bytes


def test_one_profile_larger_than_the_bound_is_still_kept(client, engine):
    v1, _, v3 = three_versions(client, engine)
    with engine.connect() as conn:
        cache = ProfileCache(max_bytes=1)
        held = cache.get(conn, [v3])[v3]
        assert cache.get(conn, [v3])[v3] is held  # the one just compiled stays
        cache.get(conn, [v1])
        assert cache.held_bytes == footprint(cache.get(conn, [v1])[v1])
        assert cache.get(conn, [v3])[v3] is not held  # dropped for v1, compiled again


def test_the_footprint_counts_the_embedding_bases():
    cp = embedding_profile()
    (lay,) = cp.embeddings.layouts
    b = lay.basis
    basis = (b.mean.nbytes + b.whiten.nbytes + b.reference_mean.nbytes
             + b.reference_precision.nbytes)
    ks = sum(c.ks.sample.nbytes + c.ks.points.nbytes + c.ks.ref_cum.nbytes
             for c in cp.columns if c.ks is not None)
    pca = 0 if cp.pca is None else (cp.pca.mean.nbytes + cp.pca.scale.nbytes
                                    + cp.pca.components.nbytes)
    assert basis > 0
    assert footprint(cp) == ks + pca + basis + 4096 * (len(cp.columns) + 1)
