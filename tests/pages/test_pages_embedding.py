"""An embedding feature's page: what its check decides on, every number equal to the REST
drift report's embedding entry for the same window (effect, measured shift, chi-square and
p-value, the lines at the window's n and the policy's, directions kept, the share of variance
outside them, n, minimum support), and its effect over time equal to the history report's
stored points, each window with its stored p-value and n."""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest

from app.jobs import runner
from app.pages.routes import CSP
from tests.api.test_embedding_api import post_shifted, register, vectors
from tests.pages.pageparse import parse
from tests.pages.pages_data import page_settings, window_params
from tests.pages.test_pages import shown_equals

PAGE = "/ui/models/search/versions/v1/features/vec"


@pytest.fixture
def settings(db_url: str):
    return page_settings(db_url, job_catchup_windows=6)


def seed(client, engine, settings, reference: int = 3000):
    """The model, v1 with a reference of ``reference`` vectors, 1,500
    predictions shifted 0.5 sd in the latest window (one in ten without a vector), and one
    tick after it, which stores the last six windows."""
    rng = np.random.default_rng(11)
    register(client)
    r = client.post("/v1/models/search/versions/v1/reference", json={"records": [
        {"a": float(rng.normal()), "vec": v.tolist(), "score": 0.3}
        for v in vectors(rng, reference)]})
    assert r.status_code in (200, 201), r.text
    start, end = post_shifted(client, rng)
    counts = runner.tick(engine, settings, now=end + timedelta(seconds=1))
    assert counts.get("success", 0) > 0 and "failure" not in counts, counts
    return start, end


def drift_entry(client, params: dict[str, str]) -> tuple[dict, dict]:
    r = client.get("/v1/models/search/reports/drift", params={**params, "version": "v1"})
    assert r.status_code == 200, r.text
    emb = r.json()["versions"][0]["embeddings"]
    (e,) = emb["features"]
    return e, emb


def test_an_embedding_page_shows_the_drift_reports_embedding_entry(client, engine, settings):
    params = window_params(*seed(client, engine, settings))
    r = client.get(PAGE, params=params)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-security-policy"] == CSP and "<script" not in r.text
    e, emb = drift_entry(client, params)
    assert e["decision"] == "critical" and e["n"] == 1350 and e["gate"] == "threshold", e
    row = parse(r.text).fields["id:summary"]
    for key in ("effect", "mean_shift", "statistic", "pvalue", "explained_variance"):
        shown_equals(row[key], e[key])
    shown_equals(row["outside_variance"], 1 - e["explained_variance"])
    shown_equals(row["line_warning"], e["lines"]["warning"])
    shown_equals(row["line_critical"], e["lines"]["critical"])
    shown_equals(row["embedding_shift_warning"], emb["lines"]["warning"])
    shown_equals(row["embedding_shift_critical"], emb["lines"]["critical"])
    for key in ("components", "dim", "n", "n_reference", "min_support"):
        assert int(row[key]) == e[key], key
    assert parse(r.text).decisions[""] == "critical"
    # no PSI, bins or ECDF for a vector
    assert 'id="bins"' not in r.text and 'class="ecdf"' not in r.text
    # the version page's embedding table links the page
    version = client.get("/ui/models/search/versions/v1", params=params).text
    assert f'href="{PAGE}?start=' in version


def test_the_shift_over_time_is_the_stored_history(client, engine, settings):
    start, end = seed(client, engine, settings)
    text = client.get(PAGE, params=window_params(start, end)).text
    span = {"start": (end - timedelta(hours=24)).isoformat(), "end": end.isoformat(),
            "feature": "vec", "version": "v1"}

    def stored(metric: str) -> list[dict]:
        r = client.get("/v1/models/search/history", params={"metric": metric, **span})
        assert r.status_code == 200, r.text
        return r.json()["points"]

    effects, pvalues = stored("embedding_shift"), stored("embedding_shift_pvalue")
    assert len(effects) == len(pvalues) == 6  # the tick stored job_catchup_windows windows
    got = re.findall(r'<tr data-window="([^"]+)"><td>[^<]*</td><td class="n" '
                     r'data-field="value">([^<]*)</td><td class="n" data-field="pvalue">'
                     r'([^<]*)</td><td class="n" data-field="n">(\d+)<', text)
    assert [w for w, *_ in got] == [p["window_end"] for p in effects]
    for (_, value, pvalue, n), p, q in zip(got, effects, pvalues, strict=True):
        shown_equals(value, p["value"])
        shown_equals(pvalue, q["value"])
        assert int(n) == p["n"]
    assert 'id="series"' in text and 'class="series"' in text


def test_without_a_basis_the_page_says_why(client, engine, settings):
    params = window_params(*seed(client, engine, settings, reference=150))
    r = client.get(PAGE, params=params)
    assert r.status_code == 200, r.text[:300]
    e, _ = drift_entry(client, params)
    assert e["status"] == "not_applicable"
    assert 'id="summary"' not in r.text
    assert parse(r.text).fields[""]["reason"] == e["reason"]
    assert "at least 200 complete vectors" in e["reason"]
    # the numeric feature of the same model keeps its own page
    assert client.get("/ui/models/search/versions/v1/features/a",
                      params=params).status_code == 200
