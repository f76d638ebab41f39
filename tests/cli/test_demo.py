"""`modelmon demo` against a live server: it says what it registers, what it injects and when,
shows its progress, and its traffic and labels are stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from app.storage.tables import (
    feature_weights,
    labels,
    model_versions,
    predictions,
    weight_stats,
)
from tests.cli.test_report_cli import modelmon
from tests.conftest import ROOT


def test_demo_announces_its_plan_and_the_incident(live_server, engine, tmp_path):
    out = modelmon("demo", "--url", live_server.url, "--duration", "6", "--incident-after", "1",
                   "--speed", "4", "--batch-size", "20", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("demo: registering model 'demo-fraud' at " + live_server.url)
    assert "0:00 steady traffic: 80 predictions/s" in out.stdout
    assert "0:01 incident: x0 and x1 drift, scores become over-confident" in out.stdout
    assert "ends at 0:06" in out.stdout
    assert any(ln.startswith("demo: 0:0") and ln.endswith("incident injected") for ln in lines)
    # it ends saying what to look at next
    nxt = lines.index(next(ln for ln in lines if ln.startswith("demo: what to look at next")))
    assert lines[nxt + 1].startswith("  modelmon report drift --model demo-fraud --url ")
    assert any("report compare" in ln and "--base v1 --candidate v2" in ln
               for ln in lines[nxt:])
    sent = lines[nxt - 1]
    assert sent.startswith("demo: sent ") and sent.endswith(" labels")
    n_predictions = int(sent.split()[2].replace(",", ""))
    n_labels = int(sent.split()[-2].replace(",", ""))
    with engine.connect() as conn:
        def rows(table) -> int:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

        assert rows(predictions) == n_predictions > 0
        assert rows(labels) == n_labels > 0
        assert rows(model_versions) == 2 and rows(weight_stats) > 0
        # v1 (light L2) uses every feature; v2's L1 penalty zeroed x4 and x5
        per_feature = conn.execute(select(feature_weights.c.stats)
                                   .order_by(feature_weights.c.version_id)).scalars().all()
    zero = [[f["feature"] for f in s["features"] if f["zero"]] for s in per_feature]
    assert zero == [[], ["x4", "x5"]]
    # in a pipe, lines are whole: not cut or wrapped at 80 columns
    assert any(len(ln) > 120 for ln in lines)
    assert any(ln.startswith("demo: registering") and ln.endswith("a reference of 5,000 rows")
               for ln in lines)
    assert "v2 with an L1 penalty (0.01) that zeroes x4 and x5" in out.stdout
    assert "x4 drifts too (v2 gives it no weight: a ticket for v2, not a page)" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_demo_json_is_one_summary_on_stdout(live_server, tmp_path):
    out = modelmon("demo", "--url", live_server.url, "--duration", "2", "--speed", "4",
                   "--batch-size", "20", "--clean", "--model", "quiet", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["model"] == "quiet" and summary["predictions"] > 0
    assert summary["incident"] is False and summary["versions"] == ["v1", "v2"]
    assert summary["next"][0].startswith("modelmon report drift --model quiet")
    assert f"{live_server.url}/ui/models/quiet/versions/v2: " in summary["next"][-2]
    assert "demo: registering model 'quiet'" in out.stderr


def test_demo_names_its_command_as_it_can_be_typed_again(live_server, tmp_path):
    """Run as .venv/bin/modelmon from a shell whose PATH lacks the venv, the next steps name
    that path: `modelmon report ...` would not be found."""
    script = Path(sys.executable).parent / "modelmon"
    out = subprocess.run([str(script), "demo", "--url", live_server.url, "--duration", "1",
                          "--speed", "4", "--batch-size", "20", "--clean", "--model", "typed",
                          "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    steps = json.loads(out.stdout)["next"]
    assert steps[0].startswith(f"{script} report drift --model typed --url "), steps
