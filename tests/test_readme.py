"""The README's curl examples, run as shown against `modelmon serve` on the embedded default
(a SQLite file in the working directory, nothing configured)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx2
import pytest

from tests.conftest import ROOT, free_port


def readme_examples() -> list[tuple[str, int, str]]:
    """(command, expected status, expected substring) for every command followed by a
    `# -> STATUS [text]` line in the README's API section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The API by example", 1)[1].split("\n## ", 1)[0]
    out = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        command: list[str] = []
        for line in block.splitlines():
            m = re.match(r"# -> (\d{3})\s*(.*)$", line)
            if m:
                out.append(("\n".join(command), int(m.group(1)), m.group(2).strip()))
                command = []
            else:
                command.append(line)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # noqa: ANN001, ANN201
    cwd = tmp_path_factory.mktemp("readme")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("modelmon serve did not start")
            time.sleep(0.1)
        yield port, cwd
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_readme_has_examples_for_every_endpoint():
    commands = " ".join(c for c, _, _ in readme_examples())
    for path in ("/v1/models", "/v1/models/fraud/versions", "/v1/models/fraud",
                 "/v1/predictions", "/v1/labels", "/healthz", "/readyz"):
        assert f"localhost:8000{path}" in commands, path


def test_every_readme_example_works_as_shown(served):
    port, cwd = served
    examples = readme_examples()
    assert len(examples) >= 10
    for command, status, expected in examples:
        cmd = command.replace("localhost:8000", f"localhost:{port}") + " -w '\\n%{http_code}'"
        out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, (command, out.stderr)
        body, _, code = out.stdout.rpartition("\n")
        assert int(code) == status, (command, out.stdout)
        assert expected in body, (command, body)
    assert (cwd / "modelmon.db").exists()  # the embedded default, in the working directory
