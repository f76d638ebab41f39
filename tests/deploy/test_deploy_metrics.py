"""`promtool check metrics` on a real scrape of a service with every kind of series."""

from __future__ import annotations

import subprocess

import numpy as np
from fastapi.testclient import TestClient

from app.jobs import runner
from app.main import create_app
from app.settings import Settings
from tests.jobs_data import (
    drift_model,
    labels_for,
    latest_window,
    post_all,
    reference_csv,
    traffic,
)


def test_promtool_check_metrics_on_a_real_scrape(promtool, tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/m.db", job_catchup_windows=1,
                        metrics_cache_seconds=0)
    from app.storage import migrate

    app = create_app(settings, run_scheduler=False)
    migrate.upgrade(app.state.engine)
    rng = np.random.default_rng(2)
    with TestClient(app) as c:
        c.post("/v1/models", json=drift_model())
        c.post("/v1/models/credit/versions", json={"version": "v1"})
        c.post("/v1/models/credit/versions/v1/reference", content=reference_csv(rng, 500),
               headers={"content-type": "text/csv"})
        c.post("/v1/models/credit/versions/v1/weights", json={"tensors": [
            {"name": "w", "shape": [4], "count": 4, "zeros": 1, "l1": 2.0, "l2": 1.2,
             "max_abs": 0.9, "mean": 0.1, "std": 0.4}]})
        start, end = latest_window()
        records, _, y, _ = traffic(rng, 400, start, end)
        post_all(c, "/v1/predictions", records)
        post_all(c, "/v1/labels", labels_for(records[:300], y[:300]))  # labels, with delays
        runner.tick(app.state.engine, settings, now=end)
        text = c.get("/metrics").text
    app.state.engine.dispose()
    assert "modelmon_feature_psi{" in text and "modelmon_weight_l1{" in text
    assert "modelmon_label_delay_p90_seconds{" in text and "modelmon_cohort_error_ratio{" in text
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "" and out.stderr.strip() == "", out.stdout + out.stderr
