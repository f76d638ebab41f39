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
