"""A new process reads ahead the schemas and reference profiles of the versions that had
predictions in the last window, before its first batch: a restart under traffic must not put
every early batch through reading and compiling a profile."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from app.main import create_app
from tests.factories import NOW, binary_model, iso, prediction, register

ROWS = 200
REFERENCE = ("amount,country,score\n"
             + "".join(f"{i},{'DE' if i % 3 else 'FR'},{(i % 10) / 10}\n"
                       for i in range(ROWS))).encode()


def _version_ids(engine) -> dict[tuple[str, str], int]:
    from sqlalchemy import text
    with engine.connect() as conn:
        return {(m, v): i for m, v, i in conn.execute(text(
            "SELECT m.name, v.version, v.id FROM model_versions v "
            "JOIN models m ON m.id = v.model_id"))}


def test_a_new_process_reads_ahead_the_recently_active_versions_only(client, settings):
    register(client, binary_model("fraud"), versions=("v1", "v2"))
    register(client, binary_model("idle"))
    for model, ver in (("fraud", "v1"), ("fraud", "v2"), ("idle", "v1")):
        r = client.post(f"/v1/models/{model}/versions/{ver}/reference", content=REFERENCE,
                        headers={"content-type": "text/csv"})
        assert r.status_code in (200, 201), r.text
    # fraud v1 had predictions this hour; fraud v2 only two windows ago; idle none
    r = client.post("/v1/predictions", json={"records": [
        prediction(i) for i in range(5)] + [
        prediction(100 + i, ver="v2", timestamp=iso(
            NOW - timedelta(seconds=2 * settings.job_window_seconds + 60)))
        for i in range(5)]})
    assert r.status_code == 200, r.text
    ids = _version_ids(client.app.state.engine)

    fresh = create_app(settings)  # another process on the same database
    try:
        assert fresh.state.profiles.held() == {}
        with TestClient(fresh):  # its start-up
            warmed = set(fresh.state.profiles.held())
            schemas = set(fresh.state.schemas._by_name)
        assert warmed == {ids["fraud", "v1"]}
        assert schemas == {"fraud"}
        # and what it read ahead is the stored profile, as a batch would have compiled it
        with fresh.state.engine.connect() as conn:
            again = type(fresh.state.profiles)().get(conn, [ids["fraud", "v1"]])
        assert again[ids["fraud", "v1"]].key == fresh.state.profiles.held()[
            ids["fraud", "v1"]].key
    finally:
        fresh.state.engine.dispose()


def test_a_process_with_nothing_recent_starts_and_serves(client, settings):
    register(client)
    fresh = create_app(settings)
    try:
        with TestClient(fresh, base_url="http://127.0.0.1") as c:
            assert fresh.state.profiles.held() == {}
            r = c.post("/v1/predictions", json={"records": [prediction(0)]})
            assert r.status_code == 200, r.text
    finally:
        fresh.state.engine.dispose()
