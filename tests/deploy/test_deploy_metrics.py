"""`promtool check metrics` on real scrapes of `modelmon serve` and `modelmon worker`, after
traffic with labels, with every kind of series."""

from __future__ import annotations

import subprocess

from fastapi.testclient import TestClient

from app.jobs import runner
from app.main import create_app
from app.settings import Settings
from tests.jobs_data import latest_window, seed


def promtool_check_metrics(promtool: str, text: str) -> None:
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "" and out.stderr.strip() == "", out.stdout + out.stderr


def test_promtool_check_metrics_on_a_real_scrape(promtool, tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/m.db", job_catchup_windows=1,
                        metrics_cache_seconds=0)
    start, end = latest_window()
    seed(settings, start=start, end=end)  # labels too, with delays
    app = create_app(settings, run_scheduler=False)
    with TestClient(app) as c:
        runner.tick(app.state.engine, settings, now=end)
        assert c.get("/v1/models/credit").status_code == 200
        assert c.post("/v1/models/credit/versions", json={  # the training gauges too
            "version": "v9", "metadata": {"training": {
                "train_loss": 0.2, "validation_loss": 0.3, "penalty_loss": 0.01,
                "validation_error": 0.1, "validation_ece": 0.02,
                "cohort_validation_error": {"region=north": 0.2}, "train_rows": 100,
                "validation_rows": 50, "parameters": 10, "nonzero_parameters": 4}}}
                      ).status_code == 201
        text = c.get("/metrics").text
        assert "modelmon_model_version_validation_gap" in text
    app.state.engine.dispose()
    assert "modelmon_feature_psi{" in text and "modelmon_weight_l1{" in text
    assert "modelmon_label_delay_p90_seconds{" in text and "modelmon_cohort_error_ratio{" in text
    assert 'modelmon_job_last_run_failed{job_name="drift",model="credit"} 0.0' in text
    assert 'modelmon_http_request_duration_seconds_count{' in text
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_open_fds", "python_info", "python_gc_collections_total"):
        assert f"\n{family}" in text, family
    promtool_check_metrics(promtool, text)
