"""The `modelmon` command itself: its version, and a database it cannot use reported as one
line on stderr (password hidden) with exit code 1, for the commands that open the database."""

from __future__ import annotations

import os
import subprocess
import sys

from app import __version__
from tests.cli.test_report_cli import modelmon, one_line_error
from tests.conftest import ROOT, free_port


def test_version(tmp_path):
    out = modelmon("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"modelmon {__version__}"


def test_the_command_line_loads_the_lake_and_statistics_only_where_used(tmp_path):
    """Building the parser of every command imports neither pyarrow nor pandas nor scipy
    (seconds of start-up on every `modelmon report`); a backfill imports them when it runs."""
    code = ("import sys; from app import cli; sys.argv = ['modelmon', '--version']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pyarrow', 'pandas', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path):
    url = f"postgresql+psycopg://modelmon:s3cret@127.0.0.1:{free_port()}/modelmon"
    for command in (["migrate"], ["serve", "--port", str(free_port())]):
        line = one_line_error(modelmon(*command, cwd=tmp_path, MODELMON_DATABASE_URL=url),
                              f"modelmon {command[0]}: error: cannot use the database at "
                              "postgresql+psycopg://modelmon:***@127.0.0.1:", "check "
                              "MODELMON_DATABASE_URL")
        assert "s3cret" not in line
    assert list(tmp_path.iterdir()) == []


def test_a_worker_metrics_port_in_use_is_one_line(tmp_path):
    """Two workers on one host with the same /metrics port: the second says so and how to
    fix it, instead of a traceback."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        out = modelmon("worker", "--metrics-port", str(port), cwd=tmp_path,
                       MODELMON_DATABASE_URL=f"sqlite:///{tmp_path}/m.db")
    one_line_error(out, f"modelmon worker: error: cannot serve /metrics on 127.0.0.1:{port}",
                   "--metrics-port")
