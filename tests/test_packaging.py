"""The server installs like a package: the wheel built from the sources, installed with the
locked dependencies into a fresh virtual environment outside the repository, answers
`modelmon --version`, migrates a SQLite database, serves it (/readyz), and runs `demo` and
`report` against itself, leaving nothing but the database in the directory it ran from."""

from __future__ import annotations

import os
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
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--quiet", str(source), "-w", str(wheels)],
                           check=True, cwd=tmp_path, timeout=300, capture_output=True, text=True)
    # every directory of data is declared: no wall of setuptools warnings in `make install`
    assert "Package would be ignored" not in built.stderr, built.stderr
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


def _declared() -> set[str]:
    """The distributions pyproject.toml declares (dependencies and every extra), normalised."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values()
                                         for d in extra)]
    return {re.split(r"[\s\[<>=!~;]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def _required_imports(source: str) -> set[str]:
    """Top-level modules a source imports, leaving out those imported under a `try` that
    catches ImportError (optional: the command says what to install)."""
    import ast

    tree = ast.parse(source)
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                "ImportError" in ast.unparse(h.type or ast.Name("BaseException"))
                for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_every_package_app_imports_is_declared():
    """A module imported by app/ comes from a distribution pyproject.toml names itself, not
    one that merely arrives with another (starlette with fastapi)."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    imported = {name for path in (ROOT / "app").rglob("*.py")
                for name in _required_imports(path.read_text())}
    third_party = sorted(imported - set(sys.stdlib_module_names) - {"app", "__future__"})
    undeclared = {name: dists.get(name) for name in third_party
                  if not {d.lower().replace("_", "-") for d in dists.get(name, [name])}
                  & _declared()}
    assert undeclared == {}
    assert "starlette" in third_party


def _docker_context() -> list[Path]:
    """The files `docker build .` sends, by .dockerignore's rules as Docker applies them (the
    last matching pattern decides; a directory's pattern covers what is under it)."""
    import fnmatch

    rules = [(ln.startswith("!"), ln.lstrip("!").removeprefix("**/"), ln.startswith("**/"))
             for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]

    def kept(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        keep = True
        for include, pattern, anywhere in rules:
            names = parts if anywhere else prefixes
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                keep = include
        return keep

    includes = [pattern for include, pattern, _ in rules if include]
    out = []
    for here, dirs, files in os.walk(ROOT):  # the whole tree, .venv and .git too
        rel = Path(here).relative_to(ROOT).as_posix()
        rel = "" if rel == "." else rel + "/"
        # a directory left out whole, with nothing under it let back in, is not entered
        dirs[:] = [d for d in dirs if kept(rel + d) or any(
            i.startswith(rel + d + "/") for i in includes)]
        out += [ROOT / (rel + f) for f in files if kept(rel + f)]
    return out


def test_the_docker_build_context_is_what_the_dockerfile_copies():
    context = _docker_context()
    names = {str(p.relative_to(ROOT)) for p in context}
    copied = [src for ln in (ROOT / "Dockerfile").read_text().splitlines()
              if ln.startswith("COPY ") and "--from" not in ln
              for src in ln.split()[1:-1]]
    assert copied, "no COPY in the Dockerfile"
    for src in copied:  # every file or directory the Dockerfile copies is in the context
        assert src in names or any(n.startswith(src.rstrip("/") + "/") for n in names), src
    tops = {n.split("/")[0] for n in names}
    assert tops == {src.rstrip("/") for src in copied}, tops
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    size = sum(p.stat().st_size for p in context if p.is_file())
    assert size < 5 * 2**20, size  # the sources: a few MB, not .venv's hundreds
