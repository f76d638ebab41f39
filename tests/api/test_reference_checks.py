"""A reference's own mistakes, answered where they are: a feature column missing whole (422
naming each, in every format), a bad CSV value (its row), and a reference smaller than
MODELMON_REFERENCE_MIN_ROWS (stored, with a warning saying why it is weak)."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.factories import binary_model, register

URL = "/v1/models/fraud/versions/v1/reference"
MODEL = binary_model(features=[{"name": "amount", "type": "numeric"},
                               {"name": "mean radius", "type": "numeric"},
                               {"name": "country", "type": "categorical"}])


def parquet(columns: dict[str, list]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


ROWS = 150
ONLY_AMOUNT = {"amount": [float(i) for i in range(ROWS)], "score": [0.5] * ROWS}
BODIES = {
    "csv": ({"content-type": "text/csv"},
            ("amount,score\n" + "".join(f"{i},0.5\n" for i in range(ROWS))).encode()),
    "json": ({"content-type": "application/json"},
             json.dumps({"records": [{"amount": 1.0, "score": 0.5}] * ROWS}).encode()),
    "parquet": ({"content-type": "application/vnd.apache.parquet"}, parquet(ONLY_AMOUNT)),
}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_a_feature_column_missing_whole_is_refused_naming_each(client, kind):
    register(client, MODEL)
    headers, body = BODIES[kind]
    r = client.post(URL, content=body, headers=headers)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["code"] == "validation_error"
    assert "'mean radius', 'country'" in err["message"] and "2 of the model's 3" in err["message"]
    assert [d["field"] for d in err["details"]] == ["mean radius", "country"]


def test_a_bad_csv_value_names_its_row(client):
    register(client, MODEL)
    rows = [f"{i},{i / 2},DE,0.5" for i in range(ROWS)]
    rows[41] = "41,n/a?,DE,0.5"
    body = ("amount,mean radius,country,score\n" + "\n".join(rows) + "\n").encode()
    r = client.post(URL, content=body, headers={"content-type": "text/csv"})
    assert r.status_code == 422, r.text
    (problem,) = r.json()["details"]
    assert problem["field"] == "mean radius"
    assert "'n/a?' at row 42" in problem["problem"] and "line 43" in problem["problem"]


def test_a_bad_json_value_names_its_record(client):
    register(client, MODEL)
    records = [{"amount": 1.0, "mean radius": 2.0, "country": "DE"}] * 3
    records = [*records, {"amount": "12", "mean radius": 2.0, "country": "DE"}]
    r = client.post(URL, json={"records": records})
    assert r.status_code == 422, r.text
    assert "'12', at records[3]" in r.json()["details"][0]["problem"]


def test_a_small_reference_is_stored_with_a_warning(client, settings):
    register(client, MODEL)
    small = "amount,mean radius,country,score\n1,2,DE,0.5\n2,3,FR,0.4\n3,4,DE,0.1\n"
    r = client.post(URL, content=small.encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 201, r.text
    (warning,) = r.json()["warnings"]
    assert warning.startswith("the reference has 3 rows, fewer than MODELMON_REFERENCE_MIN_ROWS "
                              f"({settings.reference_min_rows})")
    rows = "".join(f"{i},{i},DE,0.5\n" for i in range(settings.reference_min_rows))
    r = client.post(URL, content=("amount,mean radius,country,score\n" + rows).encode(),
                    headers={"content-type": "text/csv"})
    assert r.status_code == 201 and r.json()["warnings"] == []
