"""No function over 60 lines and no module over 500 lines in app/ (scripts/check-code-shape.py),
and the checker catches both."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check-code-shape.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def _function(name: str, lines: int) -> str:
    """A function of exactly ``lines`` lines, its def line included."""
    return f"def {name}():\n" + "    x = 1\n" * (lines - 2) + "    return x\n"


def test_app_fits_the_limits():
    done = _run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_a_61_line_function_and_a_501_line_module_are_caught(tmp_path):
    long_function = tmp_path / "pkg" / "long_function.py"
    long_function.parent.mkdir()
    long_function.write_text('"""A module."""\n\n\n' + _function("fits", 60) + "\n\n"
                             + "class Holder:\n" + "\n".join(
                                 "    " + line for line in _function("grown", 61).splitlines())
                             + "\n")
    long_module = tmp_path / "pkg" / "long_module.py"
    long_module.write_text("x = 1\n" * 501)
    done = _run(str(tmp_path))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines == [
        f"{long_function}:67: function Holder.grown (61 lines, limit 60)",
        f"{long_module}:1: module (501 lines, limit 500)",
    ]


def test_the_limits_themselves_pass(tmp_path):
    (tmp_path / "at_limit.py").write_text(_function("fits", 60) + "y = 2\n" * 440)
    assert len((tmp_path / "at_limit.py").read_text().splitlines()) == 500
    done = _run(str(tmp_path / "at_limit.py"))
    assert done.returncode == 0, done.stdout
    assert done.stdout == ""


def test_nested_functions_and_migrations(tmp_path):
    # A nested function is measured on its own; migrations are not checked at all.
    inner = "\n".join("    " + line for line in _function("inner", 61).splitlines())
    (tmp_path / "nested.py").write_text("def outer():\n" + inner + "\n    return inner\n")
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_long.py").write_text(_function("upgrade", 200))
    done = _run(str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{tmp_path / 'nested.py'}:1: function outer (63 lines, limit 60)",
        f"{tmp_path / 'nested.py'}:2: function outer.inner (61 lines, limit 60)",
    ]
