"""The pages under /ui over HTTP: each number a page shows equals the REST report's for the
same window (read back from the page), the drifted features come first, the window links
move by one window, and bad input is a 4xx naming the parameter."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime

import numpy as np
import pytest

from app.pages.routes import CSP
from app.pages.views import DEBUG_DASHBOARD
from tests.conftest import ROOT
from tests.jobs_data import (
    SHIFTED,
    latest_window,
    post_all,
    traffic,
)
from tests.pages.pageparse import number, parse
from tests.pages.pages_data import (
    page_settings,
    register,
    seed_history,
    seed_model,
    window_params,
)

PAGE = "/ui/models/credit/versions/v1"


GRAFANA = "https://grafana.example.com/"


@pytest.fixture
def settings(db_url: str, request):
    """The pages' settings; a test marked ``grafana`` gets a Grafana URL too."""
    grafana = request.node.get_closest_marker("grafana") is not None
    return page_settings(db_url, **({"pages_grafana_base": GRAFANA} if grafana else {}))


def rest(client, kind: str, params: dict[str, str]) -> dict:
    r = client.get(f"/v1/models/credit/reports/{kind}", params={**params, "version": "v1"})
    assert r.status_code == 200, r.text
    return r.json()["versions"][0]


def shown_equals(shown: str, value: float | None) -> None:
    """A page's number is the report's, printed to 4 significant digits (a share as a
    percentage to one decimal)."""
    got = number(shown)
    if value is None:
        assert got is None
    elif shown.endswith("%"):
        assert got == pytest.approx(value, abs=5e-4)
    else:
        assert got == pytest.approx(value, rel=5e-4, abs=1e-300)


def test_the_version_page_shows_the_rest_reports_numbers(client):
    params = window_params(*seed_model(client))
    page = client.get(PAGE, params=params)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    fields = parse(page.text).fields
    drift = rest(client, "drift", params)
    assert len(drift["features"]) == 21
    for f in drift["features"]:
        row = fields[f"feature:{f['feature']}"]
        for key in ("psi", "ks_statistic", "ks_pvalue", "importance", "missing_rate"):
            shown_equals(row[key], f[key])
        assert int(row["n_current"]) == f["n_current"] == 1500
        assert int(row["n_reference"]) == f["n_reference"]
        extra = "new_category_rate" if f["type"] == "categorical" else "out_of_range_rate"
        shown_equals(row[extra], f[extra])
    cal = rest(client, "calibration", params)
    for key in ("ece", "mce", "brier", "n", "label_coverage"):
        shown_equals(fields["id:calibration"][key], cal[key])
    region = rest(client, "cohorts", params)["cohort_keys"]["region"]
    assert len(region["cohorts"]) == 4
    for c in region["cohorts"]:
        row = fields[f"cohort:{c['cohort']}"]
        for shown, key in (("value", "error_rate"), ("ci_low", "ci_low"),
                           ("ci_high", "ci_high"), ("rest", "rest_error_rate"), ("n", "n")):
            shown_equals(row[shown], c[key])
    strip = fields["check:calibration"]
    shown_equals(strip["n"], cal["n"])
    shown_equals(strip["label_coverage"], cal["label_coverage"])
    assert 'class="grafana"' not in page.text  # no Grafana URL set: no link
    shown_equals(fields["check:feature drift"]["n"], drift["n"])
    # 20 numeric features: the reference has a PCA basis, and the window a decided entry
    mv = drift["multivariate"]
    assert mv["gate"] == "z_test" and mv["components"] >= 1 and mv["n"] == 1500
    shown = fields["id:multivariate"]
    for key in ("effect", "mean", "reference_mean", "reference_sd", "pvalue"):
        shown_equals(shown[key], mv[key])
    assert int(shown["components"]) == mv["components"] and int(shown["n"]) == mv["n"]
    parsed = parse(page.text)
    assert parsed.decisions["id:multivariate"] == mv["decision"]
    assert parsed.decisions["check:multivariate drift"] == mv["decision"]
    shown_equals(fields["check:multivariate drift"]["n"], mv["n"])
    assert "runbooks.md#modelmonmultivariatedrifthigh" in page.text


def test_the_version_page_merges_its_window_once(client, monkeypatch):
    """The drift and performance reports of a page read one merge of the window (with the
    reference's profile), calibration and cohorts the same one: the merge is the costly part
    of a long window (BENCHMARKS.md, "Pages")."""
    from app.evaluation import windows

    params = window_params(*seed_model(client))
    calls = []
    real = windows.merge

    def merge(*a, **k):
        calls.append((a[2:5], k["cp"] is not None))
        return real(*a, **k)

    monkeypatch.setattr(windows, "merge", merge)
    assert client.get(PAGE, params=params).status_code == 200
    assert calls and len(calls) == len(set(calls)), calls
    assert all(with_profile for (_, with_profile) in calls)  # the one merge serves every report


def test_the_drifted_features_come_first_with_their_decisions(client):
    params = window_params(*seed_model(client))
    parsed = parse(client.get(PAGE, params=params).text)
    drift = {f["feature"]: f for f in rest(client, "drift", params)["features"]}
    order = parsed.order["feature"]
    assert set(order[:3]) == set(SHIFTED)
    assert {drift[f]["decision"] for f in SHIFTED} <= {"warning", "critical"}
    for f in order:
        assert parsed.decisions[f"feature:{f}"] == drift[f]["decision"]
    ranks = [("critical", "warning", "insufficient_data", "ok").index(drift[f]["decision"])
             for f in order]
    assert ranks == sorted(ranks)
    # the status strip carries the worst feature decision and its runbook link
    worst = drift[order[0]]["decision"]
    assert parsed.decisions["check:feature drift"] == worst
    assert "runbooks.md#modelmonfeaturedrifthigh" in client.get(PAGE, params=params).text


def test_the_cohorts_are_sorted_worst_first(client):
    params = window_params(*seed_model(client))
    parsed = parse(client.get(PAGE, params=params).text)
    region = rest(client, "cohorts", params)["cohort_keys"]["region"]
    by_name = {c["cohort"]: c for c in region["cohorts"]}
    order = parsed.order["cohort"]
    assert order[0] == "north"  # wrong half the time: the one that stands out
    keys = [(("critical", "warning", "insufficient_data", "ok").index(by_name[c]["decision"]),
             -by_name[c]["error_rate"]) for c in order]
    assert keys == sorted(keys)


def check_states(client, model: str, version: str) -> dict[str, int]:
    """/metrics' ``modelmon_check_state`` of a version, by check: what the alerts fire on."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == "modelmon_check_state" and s.labels["model"] == model \
                    and s.labels["version"] == version:
                out[s.labels["check"]] = int(s.value)
    return out


def test_the_models_page_says_what_the_jobs_decided_with_the_reports_counts(
        client, engine, settings):
    params = window_params(*seed_history(client, engine, settings, second_version=True))
    r = client.get("/ui", params=params)
    assert r.status_code == 200
    parsed = parse(r.text)
    for version, n in (("v1", 1500), ("v2", 300)):
        row = parsed.fields[f"version:{version}"]
        drift = rest(client, "drift", params) if version == "v1" else client.get(
            "/v1/models/credit/reports/drift", params={**params, "version": version}
        ).json()["versions"][0]
        assert int(row["traffic"]) == drift["n"] == n
        cal = client.get("/v1/models/credit/reports/calibration",
                         params={**params, "version": version}).json()["versions"][0]
        shown_equals(row["label_coverage"], cal["label_coverage"])
        # the decision is the worst of the states /metrics exported from the same stored
        # results, and the checks named are those at that state
        states = check_states(client, "credit", version)
        assert states, version
        shown = parsed.decisions[f"version:{version}"]
        top = max(states.values())
        if top:
            assert shown == ("ok", "warning", "critical")[top]
            assert row["checks"] == ", ".join(
                sorted(c for c, s in states.items() if s == top)).replace("_", " ")
        else:
            assert shown in ("ok", "insufficient_data")
    assert parsed.decisions["version:v1"] == "critical"
    assert "feature drift" in parsed.fields["version:v1"]["checks"]
    assert f'href="{PAGE}?start=' in r.text
    report = client.get("/v1/models/credit/reports/drift", params=params).json()
    assert f"window {report['window_start']} to {report['window_end']}:" in r.text


def test_the_models_page_without_a_job_result_says_so_and_still_counts(client):
    start, end = seed_model(client)
    for params in (window_params(start, end), window_params(start - (end - start), start)):
        r = client.get("/ui", params=params)
        assert r.status_code == 200
        parsed = parse(r.text)
        assert parsed.decisions["version:v1"] == ""
        assert "no job result" in r.text
        row = parsed.fields["version:v1"]
        assert int(row["traffic"]) == rest(client, "drift", params)["n"]
        shown_equals(row["label_coverage"],
                     rest(client, "calibration", params)["label_coverage"])
    # the window before holds no traffic at all
    assert int(parse(client.get("/ui", params=window_params(
        start - (end - start), start)).text).fields["version:v1"]["traffic"]) == 0


def test_the_models_page_reads_the_job_window_of_its_own_window_only(
        client, engine, settings):
    """The window before the one the jobs computed has no job result, though the jobs'
    latest window is stored: a page of an older window never shows a newer decision."""
    start, end = seed_history(client, engine, settings)
    r = client.get("/ui", params=window_params(start - (end - start), start))
    assert parse(r.text).decisions["version:v1"] == ""
    r = client.get("/ui", params=window_params(start, end))
    assert parse(r.text).decisions["version:v1"] == "critical"


def test_window_links_move_by_one_window(client):
    start, end = seed_model(client)
    text = client.get(PAGE, params=window_params(start, end)).text
    length = end - start
    prev = (f"{PAGE}?start={(start - length).isoformat()}&amp;end={start.isoformat()}"
            .replace("+", "%2B").replace(":", "%3A"))
    assert prev in text
    assert 'rel="next"' not in text  # the latest window has no next one yet
    for preset in ("1h", "6h", "24h", "7d"):
        r = client.get(PAGE, params={"preset": preset})
        assert r.status_code == 200, (preset, r.text[:200])


@pytest.mark.parametrize(("params", "status", "field"), [
    ({"preset": "2w"}, 422, "preset"),
    ({"start": "yesterday"}, 422, "start"),
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, 422, "start"),
    ({"start": "0001-01-01T00:00:00Z"}, 422, "start"),
])
def test_bad_window_input_is_a_4xx_naming_it(client, params, status, field):
    seed_model(client, n=50)
    r = client.get(PAGE, params=params)
    assert r.status_code == status, r.text
    assert field in str(r.json()["details"])


def test_unknown_model_or_version_is_404(client):
    seed_model(client, n=50)
    assert client.get("/ui/models/nope/versions/v1").json()["code"] == "unknown_model"
    assert client.get("/ui/models/credit/versions/v9").json()["code"] == "unknown_version"


def test_pages_load_nothing_from_elsewhere(client):
    seed_model(client, n=50)
    for path in ("/ui", PAGE, "/ui/login"):
        r = client.get(path)
        assert r.headers["content-security-policy"] == CSP
        assert "<script" not in r.text and " src=" not in r.text
        assert "default-src 'none'" in CSP


def test_an_earlier_window_links_the_next_one(client):
    start, end = seed_model(client, n=50)
    length = end - start
    earlier = window_params(start - length, end - length)
    text = client.get(PAGE, params=earlier).text
    assert 'rel="next"' in text
    nxt = f"?start={start.isoformat()}&amp;end={end.isoformat()}".replace(
        "+", "%2B").replace(":", "%3A")
    assert nxt in text


@pytest.mark.grafana
def test_each_check_links_the_debug_dashboard_at_its_window_where_grafana_is_set(client):
    params = window_params(*seed_model(client, n=50))
    page = client.get(PAGE, params=params)
    links = re.findall(r'<a class="grafana" href="([^"]+)"', page.text)
    strip = re.findall(r'<div data-check="([^"]+)">', page.text)
    assert len(links) == len(strip) >= 5
    cal = client.get("/v1/models/credit/reports/calibration",
                     params={**params, "version": "v1"}).json()
    start, end = (int(datetime.fromisoformat(cal[k]).timestamp() * 1000)
                  for k in ("window_start", "window_end"))
    shown = html.unescape(links[strip.index("calibration")])
    assert shown == (f"{GRAFANA}d/{DEBUG_DASHBOARD}?var-model=credit&var-version=v1"
                     f"&from={start}&to={end}")
    uid = json.loads((ROOT / "dashboards" / "debug.json").read_text())["uid"]
    assert uid == DEBUG_DASHBOARD


def test_a_reference_without_a_pca_basis_shows_why_multivariate_drift_does_not_apply(client):
    """150 reference rows are too few to fit the basis: the REST entry is not_applicable and
    the page shows its reason, with no decision in the strip."""
    rng = np.random.default_rng(3)
    register(client, rng, 150)
    start, end = latest_window()
    post_all(client, "/v1/predictions", traffic(rng, 200, start, end)[0])
    params = window_params(start, end)
    mv = rest(client, "drift", params)["multivariate"]
    assert mv["status"] == "not_applicable" and "reference of at least" in mv["reason"]
    parsed = parse(client.get(PAGE, params=params).text)
    assert parsed.fields["id:multivariate"]["reason"] == mv["reason"]
    assert parsed.decisions["check:multivariate drift"] == ""
    assert "id:multivariate" not in parsed.decisions


def test_the_calibration_cell_says_what_pages_for_a_rare_event_model_ece_calls_fine(client):
    """A 2% base rate whose scores are twice the truth: ECE (about 0.02) stays under its line
    while observed against expected positives pages; the strip shows the worst of the two, as
    the calibration alert and /metrics count it, naming which part carries it."""
    from datetime import timedelta

    from tests.factories import binary_model, iso
    from tests.factories import register as register_model

    register_model(client, binary_model("rare", cohort_keys=[]))
    start, end = latest_window()
    rng = np.random.default_rng(3)
    n = 10_000
    positive = rng.random(n) < 0.02
    step = (end - start) / (n + 1)
    records = [{"model": "rare", "version": "v1", "prediction_id": f"r{i}",
                "timestamp": iso(start + step * (i + 1)),
                "features": {"amount": float(i % 97), "country": "DE"},
                "prediction": {"score": 0.04}} for i in range(n)]
    post_all(client, "/v1/predictions", records)
    post_all(client, "/v1/labels", [
        {"model": "rare", "prediction_id": f"r{i}", "label": "fraud" if positive[i] else "legit",
         "timestamp": iso(end + timedelta(seconds=1))} for i in range(n)])
    params = {"start": iso(start), "end": iso(end)}
    r = client.get("/v1/models/rare/reports/calibration", params={**params, "version": "v1"})
    assert r.status_code == 200, r.text
    cal = r.json()["versions"][0]
    assert cal["decision"] == "ok" and cal["ece"] < 0.05  # ECE alone: fine
    assert cal["observed_expected"]["decision"] == "critical"  # O / E about 0.5
    page = client.get("/ui/models/rare/versions/v1", params=params)
    assert page.status_code == 200, page.text
    parsed = parse(page.text)
    assert parsed.decisions["check:calibration"] == "critical"
    assert "ECE ok, O/E critical" in html.unescape(page.text)
