"""`modelmon report`: over HTTP against a live server (the same numbers as the API), from a
database named with --database-url, and its errors: one line on stderr, a non-zero exit code,
no traceback and no file left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from app import cli
from tests.conftest import ROOT, free_port
from tests.factories import iso, prediction, register
from tests.jobs_data import (
    SHIFTED,
    drift_model,
    latest_window,
    post_all,
    reference_csv,
    traffic,
)


def seed_credit(client) -> tuple[str, str]:
    """The drift model with a reference, two versions with weights and shifted traffic;
    returns the window."""
    rng = np.random.default_rng(21)
    assert client.post("/v1/models", json=drift_model()).status_code == 201
    for v, zeros in (("v1", 8), ("v2", 16)):
        assert client.post("/v1/models/credit/versions", json={"version": v}).status_code == 201
        r = client.post("/v1/models/credit/versions/v1/reference", content=reference_csv(rng),
                        headers={"content-type": "text/csv"}) if v == "v1" else None
        assert r is None or r.status_code == 201
        r = client.post(f"/v1/models/credit/versions/{v}/weights", json={"tensors": [
            {"name": "dense/kernel", "shape": [10, 4], "count": 40, "zeros": zeros, "l1": 20.0,
             "l2": 4.0, "max_abs": 1.3, "mean": 0.0, "std": 0.6}]})
        assert r.status_code == 201, r.text
    start, end = latest_window()
    records, *_ = traffic(rng, 600, start, end, shifted=SHIFTED)
    post_all(client, "/v1/predictions", records)
    return iso(start), iso(end)


def modelmon(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The command in a child process, run from a directory outside the repository."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("MODELMON_URL", "MODELMON_TOKEN", "MODELMON_DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=cwd,
                          env={**environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=120)


def one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode != 0 and out.returncode != 130, (out.returncode, out.stderr)
    assert out.stdout == ""
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_report_over_http_prints_what_the_api_answers(client, live_server, capsys):
    start, end = seed_credit(client)
    window = ["--start", start, "--end", end, "--url", live_server.url]
    api = client.get("/v1/models/credit/reports/drift", params={"start": start, "end": end})
    assert cli.main(["report", "drift", "--model", "credit", *window]) == 0
    text = capsys.readouterr().out
    assert cli.main(["report", "drift", "--model", "credit", *window, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == api.json()
    f3 = next(f for f in api.json()["versions"][0]["features"] if f["feature"] == "f3")
    line = next(ln for ln in text.splitlines() if ln.startswith("f3 "))
    assert f"{f3['psi']:.4g}" in line and f3["decision"] in line
    assert cli.main(["report", "cohorts", "--model", "credit", *window]) == 0
    assert "cohort key region" in capsys.readouterr().out
    assert cli.main(["report", "calibration", "--model", "credit", *window, "--bins", "5"]) == 0
    assert "ECE=" in capsys.readouterr().out
    assert cli.main(["report", "compare", "--model", "credit", "--base", "v1",
                     "--candidate", "v2", "--url", live_server.url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("credit: v1 -> v2") and "20" in out  # 20 pp sparsity change


def test_an_empty_report_names_the_window_to_ask_for_as_options(client, live_server, capsys):
    """A prediction in the bucket still open: the default window is empty, and the hint the
    table prints is this command's --start and --end, which then show it."""
    register(client)
    for i in range(3):  # a bucket boundary passing in between fills the default window
        sent = datetime.now(UTC).replace(microsecond=0)
        assert client.post("/v1/predictions", json={"records": [
            prediction(i, timestamp=iso(sent))]}).status_code == 200
        assert cli.main(["report", "drift", "--model", "fraud", "--url",
                         live_server.url]) == 0
        out = capsys.readouterr().out
        if "no traffic in this window" in out:
            break
    hint = re.search(r"ask for a window holding it: (--start \S+ --end \S+)$", out, re.M)
    assert hint and "?start=" not in out, out
    assert cli.main(["report", "drift", "--model", "fraud", "--url", live_server.url,
                     *hint[1].split()]) == 0
    shown = capsys.readouterr().out
    assert "no traffic" not in shown and "version v1: n=1," in shown, shown


def test_report_from_a_database_named_explicitly(client, settings, capsys):
    start, end = seed_credit(client)
    api = client.get("/v1/models/credit/reports/drift", params={"start": start, "end": end})
    assert cli.main(["report", "drift", "--model", "credit", "--start", start, "--end", end,
                     "--json", "--database-url", settings.database_url]) == 0
    assert json.loads(capsys.readouterr().out)["versions"][0]["features"] == \
        api.json()["versions"][0]["features"]


def test_report_errors_are_one_line_on_stderr(client, live_server, tmp_path):
    seed_credit(client)
    nobody = f"http://127.0.0.1:{free_port()}"
    one_line_error(modelmon("report", "drift", "--model", "credit", "--url", nobody,
                            cwd=tmp_path), "cannot reach modelmon at " + nobody)
    one_line_error(modelmon("report", "drift", "--model", "ghost", "--url", live_server.url,
                            cwd=tmp_path), "404", "'ghost' is not registered")
    one_line_error(modelmon("report", "drift", "--model", "credit", "--url", live_server.url,
                            "--start", "yesterday", cwd=tmp_path), "422", "start")
    one_line_error(modelmon("report", "compare", "--model", "credit", "--url", live_server.url,
                            cwd=tmp_path), "--base and --candidate")
    one_line_error(modelmon("report", "drift", "--model", "credit", "--url", "localhost:8000",
                            cwd=tmp_path), "not an http:// or https:// URL")
    missing = tmp_path / "elsewhere" / "modelmon.db"
    one_line_error(modelmon("report", "drift", "--model", "credit", "--database-url",
                            f"sqlite:///{missing}", cwd=tmp_path), "no SQLite database")
    assert not missing.exists()
    # the service's default database is not opened (nor created) by a report
    one_line_error(modelmon("report", "drift", "--model", "credit", "--url", nobody,
                            cwd=tmp_path, MODELMON_DATABASE_URL="sqlite:///./modelmon.db"),
                   "cannot reach")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("settings", [{"auth": "on"}], indirect=True)
def test_report_with_tokens(client, engine, live_server, tmp_path):
    from app.storage import tokens

    with engine.begin() as conn:
        _, admin = tokens.create(conn=conn, name="admin", scopes=["admin", "ingest"],
                                 models=None, expires_at=None)
        _, ingest = tokens.create(conn=conn, name="ingest", scopes=["ingest"], models=None,
                                  expires_at=None)
        _, reader = tokens.create(conn=conn, name="reader", scopes=["read"], models=None,
                                  expires_at=None)
    client.headers["authorization"] = f"Bearer {admin}"
    start, end = seed_credit(client)
    args = ("report", "drift", "--model", "credit", "--start", start, "--end", end,
            "--url", live_server.url)
    one_line_error(modelmon(*args, cwd=tmp_path), "401", "pass --token")
    one_line_error(modelmon(*args, "--token", "mm_not-a-token", cwd=tmp_path), "401",
                   "unknown, expired or revoked")
    one_line_error(modelmon(*args, "--token", ingest, cwd=tmp_path), "403")
    ok = modelmon(*args, "--token", reader, cwd=tmp_path)
    assert ok.returncode == 0 and "f3 " in ok.stdout, ok.stderr
    ok = modelmon(*args, cwd=tmp_path, MODELMON_TOKEN=reader)
    assert ok.returncode == 0 and "f3 " in ok.stdout, ok.stderr


def test_report_drift_prints_the_multivariate_line_of_each_version(client, settings, capsys):
    """v1's reference fits a PCA basis: its line carries the JSON's effect, p, n and decision;
    v2's 150 reference rows are too few: its line is the reason."""
    start, end = seed_credit(client)
    rng = np.random.default_rng(22)
    r = client.post("/v1/models/credit/versions/v2/reference", content=reference_csv(rng, 150),
                    headers={"content-type": "text/csv"})
    assert r.status_code == 201, r.text
    s, e = (datetime.fromisoformat(t) for t in (start, end))
    post_all(client, "/v1/predictions", traffic(rng, 50, s, e, version="v2", prefix="v2")[0])
    args = ["report", "drift", "--model", "credit", "--start", start, "--end", end,
            "--database-url", settings.database_url]
    assert cli.main([*args, "--json"]) == 0
    versions = {v["version"]: v for v in json.loads(capsys.readouterr().out)["versions"]}
    assert cli.main(args) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("multivariate")]
    v1, v2 = versions["v1"]["multivariate"], versions["v2"]["multivariate"]
    assert v1["gate"] == "z_test" and v2["status"] == "not_applicable"
    assert lines == [
        f"multivariate (PCA, {v1['components']} components): effect {v1['effect']:.4g} sd, "
        f"p {v1['pvalue']:.4g}, n {v1['n']}: {v1['decision']}",
        f"multivariate (PCA): not applicable: {v2['reason']}"]
    assert v1["n"] == 600 and v1["decision"] in ("ok", "warning", "critical")
