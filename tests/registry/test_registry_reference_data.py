"""A version's reference data set: read by column name, profiled and stored; unreadable
input is Malformed, unfitting content Invalid, and nothing is stored for either."""

from __future__ import annotations

import pytest

from app.errors import Invalid, Malformed, NotFound
from app.registry import models, reference_data, versions
from app.storage import profiles


@pytest.fixture
def fraud(engine, settings, definition):
    models.create_model(engine=engine, settings=settings, definition=definition, policy=None)
    return versions.create_version(engine=engine, model="fraud", version="v1",
                                   created_at=None, metadata={}, features=None,
                                   maintenance_seconds=None)[0]


def store(engine, settings, tmp_path, body, ctype, version="v1"):
    path = tmp_path / "reference"
    path.write_bytes(body)
    return reference_data.store_reference(engine=engine, settings=settings,
                                          model_name="fraud", version=version, path=path,
                                          ctype=ctype)


def test_a_csv_reference_is_profiled_and_stored(engine, settings, tmp_path, fraud):
    rows = "".join(f"{i}.5,{'DE' if i % 2 else 'FR'},0.{i % 10},{i}\n" for i in range(50))
    stored = store(engine, settings, tmp_path, ("amount,country,score,row_id\n" + rows).encode(),
                   "text/csv")
    assert stored["n_rows"] == 50 and stored["prediction"] is True
    assert stored["ignored_columns"] == ["row_id"] and stored["missing_columns"] == []
    with engine.connect() as conn:
        got = profiles.get_profile(conn=conn, version_id=fraud.row.id)
    assert got["source"] == "upload" and got["n_rows"] == 50


def test_unreadable_or_unfitting_references_store_nothing(engine, settings, tmp_path, fraud):
    with pytest.raises(Malformed) as err:
        store(engine, settings, tmp_path, b"not parquet", "application/vnd.apache.parquet")
    assert err.value.code == "invalid_parquet"
    with pytest.raises(Invalid) as err:
        store(engine, settings, tmp_path, b'{"records": [{"amount": "x", "score": 2}]}',
              "application/json")
    # every problem at once: the values, then the feature without a column
    assert [p.field for p in err.value.details] == ["amount", "score", "country"]
    with pytest.raises(NotFound):
        store(engine, settings, tmp_path, b'{"records": [{"amount": 1}]}', "application/json",
              version="v9")
    with engine.connect() as conn:
        assert profiles.get_profile(conn=conn, version_id=fraud.row.id) is None
