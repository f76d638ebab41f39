"""Effective policies: settings, then the model's overrides, then per feature and per cohort
key; and, on both stores, the same traffic decided differently by models whose policies
differ, in the stored results and in the reports alike."""

from __future__ import annotations

import copy
from dataclasses import fields

import numpy as np
import pytest
from sqlalchemy import select

from app.evaluation import policy
from app.evaluation.policy import PER_COHORT_KEY_FIELDS, PER_FEATURE_FIELDS, Thresholds
from app.jobs import runner
from app.settings import Settings
from app.storage.tables import metric_results, models
from tests.factories import iso
from tests.jobs_data import drift_model, latest_window, post_all, reference_csv, traffic


def test_every_threshold_is_a_knob_with_its_setting_as_default():
    s = Settings(threshold_psi_critical=0.3, label_lag_seconds=60, page=False,
                 expected_interval_seconds=None)
    eff = policy.effective(s, None)
    assert eff.thresholds == Thresholds.from_settings(s)
    assert (eff.label_lag_seconds, eff.page, eff.expected_interval_seconds) == (60, False, None)
    # the overlay is generic over the dataclass: every field can be overridden
    for f in fields(Thresholds):
        value = getattr(Thresholds.from_settings(s), f.name)
        bumped = value + 1 if f.name.endswith("_n") or f.name.endswith("bins") else value / 2
        assert getattr(policy.effective(s, {f.name: bumped}).thresholds, f.name) == bumped
    assert set(PER_FEATURE_FIELDS) | set(PER_COHORT_KEY_FIELDS) <= {
        f.name for f in fields(Thresholds)}


def test_per_feature_and_per_cohort_key_overrides_layer_on_the_model():
    s = Settings()
    eff = policy.effective(s, {"psi_critical": 0.2, "min_n": 50,
                               "features": {"a": {"psi_critical": 0.3}},
                               "cohort_keys": {"k": {"cohort_min_n": 7}}})
    assert eff.thresholds.psi_critical == 0.2
    assert eff.features["a"].psi_critical == 0.3
    assert eff.features["a"].min_n == 50  # the model's, not the setting's
    assert eff.cohort_keys["k"].cohort_min_n == 7
    assert eff.cohort_keys["k"].psi_critical == 0.2
    # a null expected interval is a batch model, not "unset"
    assert policy.effective(s, {"expected_interval_seconds": None}
                            ).expected_interval_seconds is None


def test_problems_name_unknown_subjects_and_lines_out_of_order():
    s = Settings()
    got = policy.problems(s, {"psi_warning": 0.2, "features": {"x": {}, "ghost": {}},
                              "cohort_keys": {"nokey": {}}}, ["x"], ["region"])
    # the disorder is reported where it is made, once, not at every feature inheriting it
    assert {p for p, _ in got} == {"policy.psi_warning", "policy.features.ghost",
                                   "policy.cohort_keys.nokey"}
    got = policy.problems(s, {"features": {"x": {"psi_critical": 0.01}}}, ["x"], [])
    assert [p for p, _ in got] == ["policy.features.x.psi_warning"]
    assert policy.problems(s, {"psi_warning": 0.1}, ["x"], []) == []


# --- the same data, decided under different policies -------------------------------------

@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_interval_seconds=300, job_window_seconds=3600,
                    job_catchup_windows=1)


def register_and_send(client, name: str, pol: dict | None, records: list[dict],
                      reference: bytes | None = None) -> list[dict]:
    """The drift model under ``name`` with ``pol``, version v1 (with ``reference``), and the
    same ``records`` sent as its own; returns them."""
    body = drift_model(name)
    if pol is not None:
        body["policy"] = pol
    assert client.post("/v1/models", json=body).status_code == 201
    assert client.post(f"/v1/models/{name}/versions", json={"version": "v1"}).status_code == 201
    if reference is not None:
        r = client.post(f"/v1/models/{name}/versions/v1/reference", content=reference,
                        headers={"content-type": "text/csv"})
        assert r.status_code == 201, r.text
    mine = copy.deepcopy(records)
    for rec in mine:
        rec["model"] = name
    post_all(client, "/v1/predictions", mine)
    return mine


POLICIES = {
    "default": None,
    "tight": {"psi_critical": 0.05},
    "tight_f3": {"features": {"f3": {"psi_critical": 0.05}}},
    "loose": {"psi_warning": 0.5, "psi_critical": 0.6, "ks_d": 0.5},
}
SHIFT = 0.3  # f3's mean moves by 0.3 sd: a PSI near 0.09, between the default lines


def test_a_tighter_band_decides_critical_where_the_default_warns_and_a_looser_does_not(
        client, engine, settings):
    rng = np.random.default_rng(21)
    ref = reference_csv(rng)
    start, end = latest_window()
    records, *_ = traffic(rng, 3000, start, end, prefix="s")
    for r in records:
        r["features"]["f3"] += SHIFT
    for name, pol in POLICIES.items():
        register_and_send(client, name, pol, records, reference=ref)

    assert runner.tick(engine, settings, now=end, jobs=["drift"]) == {"success": 4}
    with engine.connect() as conn:
        ids = dict(conn.execute(select(models.c.name, models.c.id)).all())
        stored = conn.execute(select(metric_results).where(
            metric_results.c.metric == "feature_psi")).all()
    decided = {(name, r.subject): r.decision for name, mid in ids.items() for r in stored
               if r.model_id == mid}
    psi = {r.value for r in stored if r.subject == "f3"}
    assert len(psi) == 1 and 0.05 < psi.pop() < 0.15  # the same value for every model
    assert decided[("default", "f3")] == "warning"
    assert decided[("tight", "f3")] == "critical"
    assert decided[("tight_f3", "f3")] == "critical"
    assert decided[("loose", "f3")] == "ok"
    # only f3 is overridden in tight_f3: the other features decide as under the default
    for f in (f"f{i}" for i in range(20)):
        if f != "f3":
            assert decided[("tight_f3", f)] == decided[("default", f)], f
    # the stored result states the thresholds it applied
    detail = next(r.detail for r in stored if r.model_id == ids["tight_f3"]
                  and r.subject == "f3")
    assert detail["thresholds"]["psi_critical"] == 0.05
    other = next(r.detail for r in stored if r.model_id == ids["tight_f3"]
                 and r.subject == "f0")
    assert other["thresholds"]["psi_critical"] == settings.threshold_psi_critical

    # the report decides the same and states the policy it applied
    for name, want in (("default", "warning"), ("tight", "critical"), ("loose", "ok")):
        rep = client.get(f"/v1/models/{name}/reports/drift",
                         params={"start": iso(start), "end": iso(end)}).json()
        f3 = next(f for f in rep["versions"][0]["features"] if f["feature"] == "f3")
        assert f3["decision"] == want, name
        assert rep["policy"]["psi_critical"] == (
            (POLICIES[name] or {}).get("psi_critical", settings.threshold_psi_critical))

    # PATCH changes the next decision: default made tight decides critical in a report
    assert client.patch("/v1/models/default", json={"policy": POLICIES["tight"]}
                        ).status_code == 200
    rep = client.get("/v1/models/default/reports/drift",
                     params={"start": iso(start), "end": iso(end)}).json()
    f3 = next(f for f in rep["versions"][0]["features"] if f["feature"] == "f3")
    assert f3["decision"] == "critical"


def test_docs_policy_lists_every_knob_with_its_default_setting_and_scope():
    """docs/policy.md's table and the code agree: every knob, its setting, the setting's
    default, and where a feature or cohort key may override it."""
    from tests.conftest import ROOT

    rows = {}
    for line in (ROOT / "docs" / "policy.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    s = Settings()
    knobs = (*policy.threshold_knobs(), *policy.MODEL_KNOBS)
    assert set(rows) == set(knobs)
    for knob in knobs:
        setting = policy.setting_of(knob)
        value = getattr(s, setting)
        shown = ("true" if value is True else "false" if value is False
                 else f'"{value}"' if isinstance(value, str) else f"{value:g}")
        assert rows[knob][1] == f"{shown} (`MODELMON_{setting.upper()}`)", knob
        scope = ("feature" if knob in PER_FEATURE_FIELDS
                 else "cohort key" if knob in PER_COHORT_KEY_FIELDS else "no")
        assert rows[knob][3] == scope, knob


def test_a_cohort_key_override_applies_to_that_key_only(client, settings):
    """The same labeled traffic: under the default minimum n the bad region stands out; a
    policy that raises region's cohort_min_n beyond the traffic leaves every region cohort
    undecided, and the report states that key's thresholds."""
    from tests.jobs_data import labels_for

    rng = np.random.default_rng(3)
    start, end = latest_window()
    records, _, y, _ = traffic(rng, 2000, start, end)
    for name, pol in (("default", None),
                      ("strict", {"cohort_keys": {"region": {"cohort_min_n": 100_000}}})):
        mine = register_and_send(client, name, pol, records)
        post_all(client, "/v1/labels", labels_for(mine, y, model=name))

    params = {"start": iso(start), "end": iso(end), "version": "v1"}
    got = {}
    for name in ("default", "strict"):
        rep = client.get(f"/v1/models/{name}/reports/cohorts", params=params).json()
        got[name] = rep["versions"][0]["cohort_keys"]["region"]
    north = next(c for c in got["default"]["cohorts"] if c["cohort"] == "north")
    assert north["decision"] in ("warning", "critical")
    assert {c["decision"] for c in got["strict"]["cohorts"]} == {"insufficient_data"}
    assert got["strict"]["thresholds"]["cohort_min_n"] == 100_000
    assert got["default"]["thresholds"]["cohort_min_n"] == settings.threshold_cohort_min_n
