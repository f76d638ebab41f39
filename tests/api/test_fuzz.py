"""Arbitrary JSON in any field of a record never gets a 5xx, and a refused batch stores
nothing."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import prediction, register
from tests.helpers import stored

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)
FIELDS = ["model", "version", "prediction_id", "timestamp", "features", "prediction",
          "cohorts", "label", "latency_ms", "unknown"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=json_values, sub=st.booleans())
def test_any_value_anywhere_is_never_a_5xx(client, engine, field, value, sub):
    register(client)
    before = stored(engine)["predictions"]
    rec = prediction(before)  # a fresh prediction_id per example
    if sub and isinstance(rec.get(field), dict) and rec[field]:
        first = next(iter(rec[field]))
        rec[field][first] = value
    else:
        rec[field] = value
    raw = json.dumps({"records": [rec]}, allow_nan=True).encode()
    r = client.post("/v1/predictions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    body = r.json()
    after = stored(engine)["predictions"]
    if r.status_code == 200:
        assert body["accepted"] + body["duplicates"] == 1
        assert after == before + body["accepted"]
    else:
        assert body["code"] and body["details"]
        assert after == before


URL_PATHS = [
    "/v1/models/{x}", "/v1/models/{x}/versions", "/v1/models/fraud/reports/drift?version={x}",
    "/v1/models/fraud/reports/calibration?start={x}", "/v1/models/fraud/reports/cohorts?end={x}",
    "/v1/models/fraud/history?metric=feature_psi&feature={x}",
    "/v1/models/fraud/history?metric={x}&cohort={x}",
    "/v1/models/fraud/versions/compare?base={x}&candidate=v1",
]


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.sampled_from(URL_PATHS), value=st.text(max_size=30))
def test_any_name_or_parameter_in_a_url_is_never_a_5xx(client, template, value):
    from urllib.parse import quote

    register(client)
    r = client.get(template.format(x=quote(value, safe="")))
    assert r.status_code < 500, (template, value, r.text)
    if r.status_code >= 400:
        assert r.json()["code"]


def test_nul_in_a_url_is_a_400(client):
    register(client)
    for url in ("/v1/models/a%00b", "/v1/models/fraud/history?metric=feature_psi&feature=%00"):
        r = client.get(url)
        assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    r = client.post("/v1/models/a%00/versions", json={"version": "v1"})
    assert r.status_code == 400


def test_unstorable_model_names_in_batches_are_unknown_models(client):
    register(client)
    for path in ("/v1/predictions", "/v1/labels"):
        for name in ("a\\u0000b", "\\ud800"):
            raw = ('{"records": [{"model": "' + name + '", "prediction_id": "p", '
                   '"label": "x", "timestamp": "2026-11-23T10:00:00Z"}]}').encode()
            r = client.post(path, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 404, (path, name, r.text)
            assert r.json()["details"][0]["field"] == "model"
