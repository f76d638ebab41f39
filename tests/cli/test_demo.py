"""`modelmon demo` against a live server: it says what it registers, what it injects and when,
shows its progress, and its traffic and labels are stored."""

from __future__ import annotations

from sqlalchemy import func, select

from app.storage.tables import (
    feature_weights,
    labels,
    model_versions,
    predictions,
    weight_stats,
)
from tests.cli.test_report_cli import modelmon


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
    sent = lines[-1]
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
    said = " ".join(out.stdout.split())  # the console wraps long lines
    assert "v2 with an L1 penalty (0.01) that zeroes x4 and x5" in said
    assert "x4 drifts too (v2 gives it no weight: a ticket for v2, not a page)" in said
    assert list(tmp_path.iterdir()) == []
