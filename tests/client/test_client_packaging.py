"""The client in other processes: one that logs and exits without closing still delivers;
a forked child sends its own records only; the built wheel installs into a fresh virtual
environment outside this repository and sends a batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

from modelmon_client import Monitor

from tests.conftest import ROOT

SCRIPT = textwrap.dedent("""
    import sys
    from modelmon_client import Monitor
    monitor = Monitor(sys.argv[1], model=sys.argv[2], version="v1", batch_size=1000,
                      flush_interval=3600)
    for i in range(2500):
        pid = monitor.log(features={"amount": float(i), "country": "DE"},
                          prediction={"score": 0.5}, cohorts={"region": "eu"})
    monitor.label(pid, "fraud")
    print("logged", flush=True)
    # no flush, no close: the exit handler sends what is buffered
""")


def test_a_process_that_exits_without_closing_delivers_its_buffer(sqlite_server, tmp_path):
    sqlite_server.register("exiting")
    script = tmp_path / "logs_and_exits.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), sqlite_server.url, "exiting"],
                         env={"PYTHONPATH": str(ROOT / "client" / "src")},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sqlite_server.predictions("exiting") == 2500
    assert sqlite_server.labels("exiting") == 1


def test_the_wheel_installs_in_a_fresh_environment_and_sends(sqlite_server, tmp_path):
    source = tmp_path / "client"  # a copy: building writes next to the sources
    shutil.copytree(ROOT / "client", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", str(source), "-w", str(wheels)], check=True,
                   cwd=tmp_path, timeout=300)
    [wheel] = wheels.glob("modelmon_client-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    str(wheel)], check=True, timeout=300)
    sqlite_server.register("wheel")
    script = tmp_path / "send.py"
    script.write_text(SCRIPT + textwrap.dedent("""
        import modelmon_client, pathlib
        print(pathlib.Path(modelmon_client.__file__).parent)
        print((pathlib.Path(modelmon_client.__file__).parent / "py.typed").exists())
        assert monitor.close(timeout=60), monitor.stats
    """))
    # cwd and environment outside the repository: only the installed wheel can be imported
    out = subprocess.run([python, str(script), sqlite_server.url, "wheel"], cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    logged, location, typed = out.stdout.split()[-3:]
    assert Path(location).is_relative_to(env_dir) and typed == "True"
    assert sqlite_server.predictions("wheel") == 2500


def test_a_forked_child_sends_its_own_records_and_not_its_parents(sqlite_server):
    """As under gunicorn --preload: the monitor is made before the fork."""
    sqlite_server.register("forked")
    monitor = Monitor(sqlite_server.url, model="forked", version="v1", flush_interval=3600)
    for i in range(50):  # buffered in the parent at the fork
        monitor.log(prediction_id=f"parent-{i}", features={"amount": 1.0},
                    prediction={"score": 0.5})
    pid = os.fork()
    if pid == 0:  # the child: its own buffer and thread
        ok = False
        try:
            for i in range(100):
                monitor.log(prediction_id=f"child-{i}", features={"amount": 2.0},
                            prediction={"score": 0.5})
            ok = monitor.close(timeout=60) and monitor.stats.sent == 100
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert monitor.close(timeout=60)
    assert monitor.stats.sent == 50
    ids = sqlite_server.prediction_ids("forked")
    assert sorted(ids) == sorted([f"parent-{i}" for i in range(50)] +
                                 [f"child-{i}" for i in range(100)])
