"""Every date a report or history parameter names is bounded: the calendar's edges (year
9999, year 1, an offset that pushes either past it) are a 422 naming the parameter, never a
500 or a dropped connection; and a date in a body that no store can hold in UTC is a 422
naming its field."""

from __future__ import annotations

import base64
import json

import pytest

from tests.factories import label, prediction, register, version

ROUTES = ["/v1/models/fraud/reports/drift", "/v1/models/fraud/reports/calibration",
          "/v1/models/fraud/reports/cohorts",
          "/v1/models/fraud/history?metric=feature_psi&feature=amount"]
OUT_OF_RANGE = ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59",
                "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "0001-01-01",
                "1969-12-31T23:59:59Z", "3000-01-01T00:00:00Z", "2999-12-31T23:00:00-02:00"]


def url(route: str, **params: str) -> str:
    query = "&".join(f"{k}={v.replace('+', '%2B')}" for k, v in params.items())
    return route + ("&" if "?" in route else "?") + query


@pytest.mark.parametrize("route", ROUTES)
def test_dates_past_the_bounds_are_422_naming_the_parameter(client, route):
    register(client)
    for value in OUT_OF_RANGE:
        for param, other in (("start", {}), ("end", {}),
                             ("end", {"start": "2026-01-01T00:00:00Z"}),
                             ("start", {"end": "2026-01-01T00:00:00Z"})):
            r = client.get(url(route, **other, **{param: value}))
            assert r.status_code == 422, (value, param, r.status_code, r.text)
            body = r.json()
            assert body["code"] == "date_out_of_range"
            assert [d["field"] for d in body["details"]] == [param]
            assert "1970-01-01T00:00:00+00:00" in body["message"]
    # the bounds themselves are dates like any other
    r = client.get(url(route, start="1970-01-01T00:00:00Z", end="2999-12-31T23:00:00Z"))
    assert r.status_code == 200, r.text


def cursor(*key: object) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_cursor_naming_a_date_or_id_out_of_range_is_422(client):
    register(client)
    for key in (("9999-12-31T23:59:59-14:00", "amount", 1, 1),
                ("0001-01-01T00:00:00+14:00", "amount", 1, 1),
                ("2026-01-01T00:00:00+00:00", "amount", 10**30, 1),
                ("2026-01-01T00:00:00+00:00", "amount", 1, -1)):
        r = client.get(url(ROUTES[3], cursor=cursor(*key)))
        assert r.status_code == 422, (key, r.text)
        assert r.json()["code"] == "invalid_cursor"
        assert r.json()["details"][0]["field"] == "cursor"
    r = client.get(url(ROUTES[3], cursor=cursor("2026-01-01T00:00:00+00:00", "amount", 1, 1)))
    assert r.status_code == 200, r.text


PAST_UTC = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]


@pytest.mark.parametrize("value", PAST_UTC)
def test_a_body_date_past_the_calendar_in_utc_is_422_naming_its_field(client, value):
    register(client)
    for path, body, field, index in (
            ("/v1/predictions", {"records": [prediction(0, timestamp=value)]}, "timestamp", 0),
            ("/v1/labels", {"records": [label(0, timestamp=value)]}, "timestamp", 0),
            ("/v1/models/fraud/versions", version("v9", created_at=value), "created_at", None),
            ("/v1/models/fraud/maintenance", {"start": value, "end": value, "reason": "x"},
             None, None)):
        r = client.post(path, json=body)
        assert r.status_code == 422, (path, r.status_code, r.text)
        detail = r.json()["details"][0]
        assert (detail.get("field"), detail.get("index")) == (field, index), detail
    assert client.get("/v1/models/fraud/versions").status_code == 200
