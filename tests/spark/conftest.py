"""One SparkSession in ``local[2]`` mode for the Spark tests (pyspark from the dev extra; the JDK
from Debian's openjdk-17-jre-headless, which scripts/install-spark-deps.sh installs when it is
missing; still missing, the Spark tests fail, they never skip)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from app.evaluation.packing import FORMAT
from app.evaluation.profiles import build_profile
from app.evaluation.summaries import ModelShape, prediction_values
from app.storage.registry import ModelRow
from tests.conftest import ROOT

INSTALL_SCRIPT = ROOT / "scripts" / "install-spark-deps.sh"


def ensure_java() -> str:
    """The java on PATH, installed with the project's script when missing (as the deploy
    tests install promtool): a missing JDK fails the Spark tests, it never skips them."""
    if found := shutil.which("java"):
        return found
    command = ["sh", str(INSTALL_SCRIPT)]
    if os.geteuid() != 0 and shutil.which("sudo"):
        command = ["sudo", "-n", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if found := shutil.which("java"):
        return found
    pytest.fail(f"java not found after {INSTALL_SCRIPT.relative_to(ROOT)} (exit "
                f"{proc.returncode}); install Debian's openjdk-17-jre-headless.\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}", pytrace=False)


@pytest.fixture(scope="package")
def spark() -> Iterator:
    ensure_java()
    from pyspark.sql import SparkSession

    # the executors' Python is this one (with modelmon and pyarrow), not the first on PATH
    # and the driver on the loopback interface: nothing leaves this machine
    env = {"PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    session = (SparkSession.builder.master("local[2]").appName("modelmon-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "3")
               # small Arrow batches: a partition reaches the kernel in several
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "500")
               # a session time zone other than UTC: bucket times must not depend on it
               .config("spark.sql.session.timeZone", "America/New_York")
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def profile_document(m: ModelRow, reference: dict, n: int, key: str) -> dict:
    """What GET .../profile answers for model ``m`` with a reference of ``reference``'s
    columns (as tests/evaluation builds them), without a service."""
    from tests.evaluation.test_evaluation_summaries import rows_

    shape = ModelShape.of(m)
    rows = rows_(shape, reference, np.zeros(n), np.full(n, np.nan))
    profile = build_profile(m, rows.features, prediction_values(shape, rows), rows.n,
                            n_bins=10, sample_size=400)
    return {"model": m.name, "version": "v1", "format": FORMAT, "bucket_seconds": 300.0,
            "task": m.task, "features": m.features, "cohort_keys": m.cohort_keys,
            "classes": m.classes or [], "profile_key": key, "profile": profile,
            "as_of": "2026-12-06T00:00:00+00:00"}
