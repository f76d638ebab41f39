"""Migrations on both stores, and the Postgres partitioning of predictions."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from app.settings import Settings
from app.storage import migrate
from app.storage.db import make_engine
from app.storage.partitions import PartitionManager, partition_name
from tests.conftest import ROOT, create_pg_database, drop_pg_database

TABLES = {"models", "model_versions", "prediction_keys", "predictions", "labels",
          "reference_profiles", "weight_stats", "feature_weights", "version_deltas",
          "metric_results", "job_runs", "maintenance_windows"}


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
        return
    url = create_pg_database("modelmon_migr")
    yield url
    drop_pg_database(url)


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(fresh_url):
    engine = make_engine(Settings(database_url=fresh_url))
    try:
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
        assert _tables(engine) >= TABLES
        migrate.downgrade(engine, "base")
        assert migrate.current_revision(engine) is None
        assert _tables(engine) == set()
        migrate.upgrade(engine)
        assert _tables(engine) >= TABLES
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                strategy = conn.execute(text(
                    "SELECT partstrat FROM pg_partitioned_table p "
                    "JOIN pg_class c ON c.oid = p.partrelid WHERE c.relname = 'predictions'"
                )).scalar_one()
            assert strategy == "r"  # range
    finally:
        engine.dispose()


def test_cli_migrate_on_a_new_sqlite_file(tmp_path):
    db = tmp_path / "cli.db"
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env={"MODELMON_DATABASE_URL": f"sqlite:///{db}", "PATH": "/usr/bin:/bin"},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"revision {migrate.head_revision()}" in out.stdout
    engine = make_engine(Settings(database_url=f"sqlite:///{db}"))
    assert _tables(engine) >= TABLES
    engine.dispose()


def test_readyz_reports_an_unmigrated_database(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/empty.db"))
    with TestClient(app) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["migration"] is None
    assert "Retry-After" in r.headers
    app.state.engine.dispose()


def test_a_database_a_newer_release_migrated_is_served_and_left_as_it_is(fresh_url, caplog):
    """A rolling upgrade or a rollback: a replica of this release starting on a database a
    newer release migrated neither fails nor changes it, and is ready; one behind is not."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    engine = make_engine(Settings(database_url=fresh_url))
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9001'"))
        assert migrate.newer_than_release("9001") and not migrate.newer_than_release(
            migrate.head_revision()) and not migrate.newer_than_release(None)
        with caplog.at_level("WARNING", logger="modelmon.migrate"):
            migrate.upgrade(engine)
        assert migrate.current_revision(engine) == "9001"
        assert "newer than this release's" in caplog.text
        app = create_app(Settings(database_url=fresh_url))
        with TestClient(app) as c:
            r = c.get("/readyz")
            assert r.status_code == 200, r.text
            assert r.json() == {"status": "ok", "database": "reachable", "migration": "9001",
                                "release_migration": migrate.head_revision()}
            with engine.begin() as conn:  # behind this release: not ready
                conn.execute(text("UPDATE alembic_version SET version_num = '0013'"))
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["expected"] == migrate.head_revision()
        app.state.engine.dispose()
    finally:
        engine.dispose()


def _partitions(engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'predictions'"))}


def test_partitions_are_created_ahead_and_for_backfilled_days(pg_url):
    engine = make_engine(Settings(database_url=pg_url))
    try:
        manager = PartitionManager(engine)
        today = datetime.now(UTC).date()
        manager.ensure_ahead(3, today=today)
        names = _partitions(engine)
        for offset in range(-1, 4):
            assert partition_name(today + timedelta(days=offset)) in names
        # a second manager (another replica) finds them and creates nothing twice
        PartitionManager(engine).ensure_ahead(3, today=today)
        assert _partitions(engine) == names
    finally:
        engine.dispose()


def test_partition_name_is_stable():
    assert partition_name(date(2026, 1, 2)) == "predictions_p20260102"


def test_prediction_documents_move_between_jsonb_and_json_unchanged(pg_url):
    """Revision 0007 retypes the predictions' documents (jsonb -> json) with the rows in place:
    what was stored before reads back the same after the upgrade and after a downgrade."""
    url = create_pg_database("modelmon_json")
    engine = make_engine(Settings(database_url=url))
    doc_types = text("SELECT column_name, data_type FROM information_schema.columns "
                     "WHERE table_name = 'predictions' AND column_name IN "
                     "('features', 'cohorts', 'probabilities') ORDER BY column_name")
    stored = text("SELECT features, cohorts, probabilities FROM predictions")
    features = {"f0": -0.125, "country": "DE", "big": 1e300, "tiny": 5e-324}
    try:
        migrate.upgrade(engine, "0006")
        day = datetime.now(UTC).date()
        PartitionManager(engine).ensure_days({day})
        with engine.begin() as conn:
            assert {t for _, t in conn.execute(doc_types)} == {"jsonb"}
            conn.execute(text(
                "INSERT INTO predictions (model_id, ts, prediction_id, version_id, received_at, "
                "features, cohorts, probabilities) VALUES (1, :ts, 'p1', 1, :ts, "
                "CAST(:f AS jsonb), CAST('{\"region\": \"eu\"}' AS jsonb), "
                "CAST('{\"a\": 0.25, \"b\": 0.75}' AS jsonb))"),
                {"ts": datetime.now(UTC), "f": json.dumps(features)})
        with engine.connect() as conn:
            expected = tuple(conn.execute(stored).one())
        assert expected[0]["tiny"] == 5e-324 and expected[1:] == ({"region": "eu"},
                                                                 {"a": 0.25, "b": 0.75})
        for revision, doc_type in (("head", "json"), ("0006", "jsonb"), ("head", "json")):
            if revision == "head":
                migrate.upgrade(engine)
            else:
                migrate.downgrade(engine, revision)
            with engine.connect() as conn:
                assert {t for _, t in conn.execute(doc_types)} == {doc_type}
                assert tuple(conn.execute(stored).one()) == expected
    finally:
        engine.dispose()
        drop_pg_database(url)


def _model_and_version(conn, now: datetime) -> None:
    """Model 1 ("m") and its version 1 ("v1"), in plain SQL: valid at every revision."""
    conn.execute(text(
        "INSERT INTO models (id, name, task, features, cohort_keys, created_at) VALUES "
        "(1, 'm', 'regression', '[]', '[]', :t)"), {"t": now})
    conn.execute(text(
        "INSERT INTO model_versions (id, model_id, version, created_at, registered_at, "
        "metadata) VALUES (1, 1, 'v1', :t, :t, '{}')"), {"t": now})


def test_policy_revision_round_trips_with_models_in_place(fresh_url):
    """Revision 0010 adds models.policy and maintenance_windows: a model stored before it
    reads back with no policy; downgrading drops both and keeps the model (and its versions:
    nothing cascades); upgrading again restores them empty."""
    engine = make_engine(Settings(database_url=fresh_url))
    now = datetime.now(UTC)
    try:
        migrate.upgrade(engine, "0009")
        with engine.begin() as conn:
            _model_and_version(conn, now)
        migrate.upgrade(engine)
        assert "policy" in {c["name"] for c in inspect(engine).get_columns("models")}
        with engine.begin() as conn:
            assert conn.execute(text("SELECT policy FROM models")).scalar_one() is None
            conn.execute(text("UPDATE models SET policy = :p"), {"p": '{"page": false}'})
            conn.execute(text(
                "INSERT INTO maintenance_windows (model_id, starts_at, ends_at, reason, "
                "created_at) VALUES (1, :t, :t, 'retrain', :t)"), {"t": now})
        migrate.downgrade(engine, "0009")
        assert "maintenance_windows" not in _tables(engine)
        assert "policy" not in {c["name"] for c in inspect(engine).get_columns("models")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM model_versions")).scalar_one() == 1
            assert conn.execute(text("SELECT name FROM models")).scalar_one() == "m"
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT policy FROM models")).scalar_one() is None
            assert conn.execute(text("SELECT count(*) FROM maintenance_windows")
                                ).scalar_one() == 0
    finally:
        engine.dispose()


def test_version_features_revision_round_trips_with_versions_in_place(fresh_url):
    """Revision 0013 adds model_versions.features: a version stored before it reads back with
    none (the model's features); downgrading drops the column and keeps the versions and
    what references them; upgrading again restores it empty."""
    engine = make_engine(Settings(database_url=fresh_url))
    now = datetime.now(UTC)
    try:
        migrate.upgrade(engine, "0011")
        with engine.begin() as conn:
            _model_and_version(conn, now)
            conn.execute(text(
                "INSERT INTO reference_profiles (version_id, model_id, source, n_rows, "
                "profile, created_at) VALUES (1, 1, 'upload', 1, '{}', :t)"), {"t": now})
        migrate.upgrade(engine)
        assert "features" in {c["name"] for c in inspect(engine).get_columns("model_versions")}
        with engine.begin() as conn:
            assert conn.execute(text("SELECT features FROM model_versions")).scalar_one() is None
            conn.execute(text("UPDATE model_versions SET features = :f"),
                         {"f": '[{"name": "x", "type": "numeric"}]'})
        migrate.downgrade(engine, "0011")
        assert "features" not in {c["name"] for c in
                                  inspect(engine).get_columns("model_versions")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version FROM model_versions")).scalar_one() == "v1"
            assert conn.execute(text("SELECT count(*) FROM reference_profiles")
                                ).scalar_one() == 1
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT features FROM model_versions")).scalar_one() is None
    finally:
        engine.dispose()


def test_rollup_revision_round_trips_with_summaries_in_place(fresh_url):
    """Revision 0015 adds bucket_summaries.bucket_seconds: a row stored before it reads back
    as one job interval (0), as does a row written without the column (an older release
    during a rolling upgrade); downgrading drops the column and the rolled-up rows (an older
    release would read an hour as one bucket) and keeps the others."""
    engine = make_engine(Settings(database_url=fresh_url))
    now = datetime.now(UTC)
    insert_row = text(
        "INSERT INTO bucket_summaries (model_id, version_id, bucket_start, kind, "
        "profile_key, n, payload, created_at) VALUES (1, 1, :b, 'outcome', '', 3, :p, :t)")
    try:
        migrate.upgrade(engine, "0014")
        with engine.begin() as conn:
            conn.execute(insert_row, {"b": now, "p": b"Zx", "t": now})
        migrate.upgrade(engine)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT bucket_seconds FROM bucket_summaries")
                                ).scalar_one() == 0
            conn.execute(insert_row, {"b": now - timedelta(days=1), "p": b"Zy", "t": now})
            conn.execute(text("INSERT INTO bucket_summaries (model_id, version_id, "
                              "bucket_start, kind, profile_key, n, payload, created_at, "
                              "bucket_seconds) VALUES (1, 1, :b, 'outcome', '', 9, :p, :t, "
                              "3600)"), {"b": now - timedelta(days=3), "p": b"Zz", "t": now})
            assert sorted(conn.execute(text("SELECT bucket_seconds FROM bucket_summaries"))
                          .scalars()) == [0, 0, 3600]
        migrate.downgrade(engine, "0014")
        assert "bucket_seconds" not in {c["name"] for c in
                                        inspect(engine).get_columns("bucket_summaries")}
        with engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT n FROM bucket_summaries")).scalars()
                          ) == [3, 3]
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert list(conn.execute(text("SELECT bucket_seconds FROM bucket_summaries"))
                        .scalars()) == [0, 0]
    finally:
        engine.dispose()
