"""A feature's page: every number equals the REST drift report's for the same window (its
row, the counts per bin, KS D where the ECDFs are drawn apart), its PSI over time equals the
history report's stored points, a second version's first window is marked, and bad input is
a 4xx naming it."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from app.pages.routes import CSP
from tests.pages.pageparse import parse
from tests.pages.pages_data import page_settings, seed_history, window_params
from tests.pages.test_pages import rest, shown_equals

PAGE = "/ui/models/credit/versions/v1"


@pytest.fixture
def settings(db_url: str):
    return page_settings(db_url, job_catchup_windows=6)


def history(client, feature: str, params: dict[str, str], version: str = "v1") -> list[dict]:
    r = client.get("/v1/models/credit/history", params={
        "metric": "feature_psi", "feature": feature, "version": version, **params})
    assert r.status_code == 200, r.text
    return r.json()["points"]


@pytest.mark.parametrize("feature", ["f3", "f0", "channel"])
def test_a_features_page_shows_the_drift_reports_numbers(client, engine, settings, feature):
    params = window_params(*seed_history(client, engine, settings))
    r = client.get(f"{PAGE}/features/{feature}", params=params)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-security-policy"] == CSP and "<script" not in r.text
    fields = parse(r.text).fields
    f = next(x for x in rest(client, "drift", params)["features"] if x["feature"] == feature)
    row = fields["id:summary"]
    for key in ("psi", "ks_statistic", "ks_pvalue", "ks_pvalue_adjusted", "missing_rate",
                "importance"):
        shown_equals(row[key], f[key])
    assert int(row["n_current"]) == f["n_current"] == 1500
    assert int(row["n_reference"]) == f["n_reference"]
    shown_equals(row["line_warning"], f["psi_gate"]["lines"]["warning"])
    shown_equals(row["line_critical"], f["psi_gate"]["lines"]["critical"])
    shown_equals(row["psi_warning"], f["thresholds"]["psi_warning"])
    assert _bin_counts(r.text) == list(zip(f["reference_counts"], f["current_counts"],
                                            strict=True))
    if f["type"] == "numeric":
        ecdf = fields["id:ecdf"]
        shown_equals(ecdf["statistic"], f["ks_statistic"])
        gap = abs(float(ecdf["reference_at"]) - float(ecdf["current_at"]))
        assert gap == pytest.approx(f["ks_statistic"], abs=2e-4)
        assert 'class="ecdf"' in r.text
    else:
        assert "id:ecdf" not in fields and 'class="ecdf"' not in r.text


def _bin_counts(html: str) -> list[tuple[int, int]]:
    """(reference, current) per bin row of the bins table, in order."""
    rows = re.findall(r'<tr data-bin="\d+">.*?data-field="reference">(\d+)<.*?'
                      r'data-field="current">(\d+)<', html, flags=re.S)
    return [(int(a), int(b)) for a, b in rows]


def test_psi_over_time_is_the_stored_history_with_version_starts(client, engine, settings):
    start, end = seed_history(client, engine, settings, second_version=True)
    params = window_params(start, end)
    text = client.get(f"{PAGE}/features/f3", params=params).text
    span = {"start": (end - (end - start) * 24).isoformat(), "end": end.isoformat()}
    stored = history(client, "f3", span)
    assert len(stored) == 6  # the tick stored job_catchup_windows windows
    got = re.findall(r'<tr data-window="([^"]+)"><td>[^<]*</td><td class="n" '
                     r'data-field="value">([^<]*)</td><td class="n" data-field="n">(\d+)<',
                     text)
    assert [w for w, _, _ in got] == [p["window_end"] for p in stored]
    for (_, value, n), p in zip(got, stored, strict=True):
        shown_equals(value, p["value"])
        assert int(n) == p["n"]
    assert 'class="series"' in text
    # v2's first window (the one holding the window's last bucket) is marked
    v2 = history(client, "f3", span, version="v2")
    assert v2 and f'data-version-start="v2">v2 at {v2[0]["window_end"]}' in text
    assert 'data-version-start="v1"' not in text  # present from the first window shown


def test_the_drift_table_links_each_feature_page(client, engine, settings):
    params = window_params(*seed_history(client, engine, settings))
    text = client.get(PAGE, params=params).text
    for f in ("f3", "channel"):
        assert f'href="{PAGE}/features/{f}?start=' in text


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    (f"{PAGE}/features/nope", {}, 404, "unknown_feature"),
    ("/ui/models/credit/versions/v9/features/f3", {}, 404, "unknown_version"),
    (f"{PAGE}/features/f3", {"preset": "2w"}, 422, "invalid_preset"),
    (f"{PAGE}/features/f3", {"start": "yesterday"}, 422, None),
])
def test_bad_feature_page_input_is_a_4xx(client, engine, settings, path, params, status, code):
    seed_history(client, engine, settings, n=200)
    r = client.get(path, params=params)
    assert r.status_code == status, r.text[:300]
    if code:
        assert r.json()["code"] == code


def test_the_version_pages_history_is_the_stored_results(client, engine, settings):
    start, end = seed_history(client, engine, settings)
    params = window_params(start, end)
    text = client.get(PAGE, params=params).text
    spark = dict(re.findall(r'<tr data-feature="([^"]+)">.*?data-spark="([^"]*)"', text,
                            flags=re.S))
    last24 = {"start": (end - 24 * (end - start) / 12).isoformat(), "end": end.isoformat()}
    assert len(spark) == 21
    for feature in ("f3", "f0", "channel"):
        stored = history(client, feature, last24)
        assert len(stored) == 6
        shown = spark[feature].split(" ")
        assert len(shown) == len(stored)
        for s, p in zip(shown, stored, strict=True):
            shown_equals(s, p["value"])
    cal = client.get("/v1/models/credit/reports/calibration", params=params).json()
    r = client.get("/v1/models/credit/history", params={
        "metric": "calibration_ece", "version": "v1",
        "start": (end - (end - start) * 24).isoformat(), "end": cal["window_end"]})
    ece = r.json()["points"]
    assert len(ece) == 6
    got = re.findall(r'<tr data-window="([^"]+)"><td>[^<]*</td><td class="n" '
                     r'data-field="value">([^<]*)</td><td class="n" data-field="n">(\d+)<',
                     text)
    assert [w for w, _, _ in got] == [p["window_end"] for p in ece]
    for (_, value, n), p in zip(got, ece, strict=True):
        shown_equals(value, p["value"])
        assert int(n) == p["n"]
    assert 'id="ece-series"' in text


def test_the_quadrant_places_each_feature_with_an_importance(client, engine, settings):
    params = window_params(*seed_history(client, engine, settings, n=600))
    text = client.get(PAGE, params=params).text
    assert 'class="quadrant"' not in text and "no importance known" in text
    coef = np.linspace(1.0, 0.0, 21).reshape(1, 21)  # channel (last) unused
    buf = io.BytesIO()
    np.savez(buf, coef=coef)
    r = client.post("/v1/models/credit/versions/v1/weights", content=buf.getvalue(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    text = client.get(PAGE, params=params).text
    drift = rest(client, "drift", params)["features"]
    placed = re.findall(r'<circle [^>]*><title>([^:<]+): PSI ([^,]+), importance ([^,]+),',
                        text[text.index('class="quadrant"'):])
    assert {name for name, _, _ in placed} == {
        f["feature"] for f in drift if f["importance"] is not None and f["psi"] is not None}
    by_name = {f["feature"]: f for f in drift}
    for name, psi, importance in placed:
        shown_equals(psi, by_name[name]["psi"])
        shown_equals(importance, by_name[name]["importance"])
