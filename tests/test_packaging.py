"""The server installs like a package: the wheel built from the sources, installed with the
locked dependencies into a fresh virtual environment outside the repository, answers
`modelmon --version`, migrates a SQLite database, serves it (/readyz), and runs `demo` and
`report` against itself, leaving nothing but the database in the directory it ran from."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

import httpx2

from app import __version__
from app.storage import migrate
from tests.conftest import ROOT, free_port
from tests.helpers import wait_ready


def test_the_wheel_installs_migrates_and_serves_outside_the_repository(tmp_path: Path):
    source = tmp_path / "source"  # a copy: building writes next to the sources
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("app", "migrations"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", str(source), "-w", str(wheels)], check=True, cwd=tmp_path,
                   timeout=300)
    [wheel] = wheels.glob("modelmon-*.whl")
    assert wheel.name.startswith(f"modelmon-{__version__}-")
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "--quiet", "-r",
                    ROOT / "requirements.lock", wheel], check=True, cwd=tmp_path, timeout=900)

    run_dir = tmp_path / "run"  # where an operator runs it: no sources, no ini file
    run_dir.mkdir()
    db = run_dir / "modelmon.db"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "MODELMON_DATABASE_URL": f"sqlite:///{db}", "MODELMON_LOG_LEVEL": "warning"}

    def modelmon(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([bin_dir / "modelmon", *args], cwd=run_dir, env=env,
                              capture_output=True, text=True, timeout=300)

    out = modelmon("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"modelmon {__version__}", out
    where = subprocess.run([bin_dir / "python", "-c", "import app; print(app.__file__)"],
                           cwd=run_dir, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(env_dir)
    out = modelmon("migrate")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"database at revision {migrate.head_revision()}"

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([bin_dir / "modelmon", "serve", "--port", str(port)],
                              cwd=run_dir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        wait_ready(url, server)
        assert httpx2.get(f"{url}/readyz").status_code == 200
        out = modelmon("demo", "--url", url, "--duration", "2", "--batch-size", "20")
        assert out.returncode == 0, out.stderr
        assert re.search(r"demo: sent \d+ predictions", out.stdout)
        out = modelmon("report", "drift", "--model", "demo-fraud", "--url", url)
        assert out.returncode == 0 and "demo-fraud window" in out.stdout, out.stderr
        # the pages' templates ship in the wheel
        page = httpx2.get(f"{url}/ui/models/demo-fraud/versions/v1")
        assert page.status_code == 200 and "demo-fraud v1" in page.text, page.text[:500]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    # nothing but the database (and SQLite's own side files) where it ran
    assert {p.name for p in run_dir.iterdir()} <= {db.name, f"{db.name}-wal", f"{db.name}-shm",
                                                   f"{db.name}.scheduler.lock"}
