"""The README's curl examples, run as shown against `modelmon serve` on the embedded default
(a SQLite file in the working directory, nothing configured), and checked not to carry dates
that the service will refuse once they age."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import httpx2
import pytest

from app.ingest.validation import Limits, parse_timestamp
from app.settings import Settings
from tests.conftest import ROOT, free_port

# The README must keep working for this long after any day the suite passes.
HORIZON = timedelta(days=60)
EXPECTED = re.compile(r"# -> (\d{3})\s*(.*)$")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def sh_blocks() -> list[str]:
    """Every ```sh block of the README's API section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The API by example", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def _is_setup(block: str) -> bool:
    """A block that only sets shell variables (e.g. `DAY=...`) for the examples after it."""
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return bool(lines) and all(ASSIGNMENT.match(ln) for ln in lines)


def readme_setup() -> str:
    """The setup blocks, run before every example as a reader runs them first."""
    return "".join(b for b in sh_blocks() if _is_setup(b))


def readme_examples() -> list[tuple[str, int, str]]:
    """(command, expected status, expected substring) for every command followed by a
    `# -> STATUS [text]` line in the README's API section."""
    out = []
    for block in sh_blocks():
        command: list[str] = []
        for line in block.splitlines():
            m = EXPECTED.match(line)
            if m:
                out.append(("\n".join(command), int(m.group(1)), m.group(2).strip()))
                command = []
            else:
                command.append(line)
    return out


def readme_unchecked() -> list[str]:
    """Blocks shown but not run against the service (no `# ->`), e.g. the CLI reports."""
    return [b for b in sh_blocks() if not _is_setup(b) and not any(
        EXPECTED.match(ln) for ln in b.splitlines())]


@cache
def _date_option() -> str:
    """How this machine's date(1) is told the time: GNU `-d @EPOCH`, BSD `-r EPOCH`."""
    gnu = subprocess.run(["date", "-u", "-d", "@0", "+%Y"], capture_output=True, text=True)
    return "-d @{}" if gnu.stdout.strip() == "1970" else "-r {}"


def clock_at(instant: datetime) -> str:
    """Shell prelude: `date` answers as if it were `instant`, so a run that crosses midnight
    still sees one day, and the README can be evaluated on any day."""
    return f'date() {{ command date {_date_option().format(int(instant.timestamp()))} "$@"; }}\n'


@pytest.fixture(scope="module")
def served(tmp_path_factory):
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
    prelude = (clock_at(datetime.now(UTC)) + readme_setup()
               + "curl() { command curl -w '\\n%{http_code}' \"$@\"; }\n")
    for command, status, expected in examples:
        cmd = prelude + command.replace("localhost:8000", f"localhost:{port}")
        out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, (command, out.stderr)
        body, _, code = out.stdout.rpartition("\n")
        assert int(code) == status, (command, out.stdout)
        assert expected in body, (command, body)
    assert (cwd / "modelmon.db").exists()  # the embedded default, in the working directory


# What the examples send, as the shell expands it: curl prints its arguments and its stdin
# instead of sending them, gzip passes its input through, the CLI prints its arguments.
SENDERS = ("curl() { printf '%s\\n' \"$@\"; cat; }\n"
           "gzip() { cat; }\n")
MARK = "@@readme-example@@"
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
                      r"(?:Z|[+-]\d{2}:?\d{2})?)?")
TIMESTAMP_FIELD = re.compile(r'"timestamp"\s*:\s*("(?:[^"\\]|\\.)*"|[^,}\s]+)')
WINDOW_PARAM = re.compile(r"(?:[?&]|^--)(?:start|end)[=\n]([^&\s]*)", flags=re.M)


def sent_by_readme(instant: datetime, cwd: Path) -> list[tuple[str, str]]:
    """(example, timestamp text) for every timestamp the README's examples send when run at
    `instant`: prediction and label timestamps, report windows, CLI arguments."""
    commands = [c for c, _, _ in readme_examples()] + readme_unchecked()
    script = clock_at(instant) + readme_setup() + SENDERS + "".join(
        f"printf '\\n{MARK}\\n'\n{c}\n" for c in commands)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL, cwd=cwd)
    assert out.returncode == 0, out.stderr
    parts = out.stdout.split(f"\n{MARK}\n")[1:]
    assert len(parts) == len(commands), out.stdout
    found = []
    for command, sent in zip(commands, parts, strict=True):
        sent = unquote(sent)
        values = {m.group(1) for m in TIMESTAMP_FIELD.finditer(sent)}
        values = {json.loads(v) if v.startswith('"') else v for v in values}
        values |= {m.group(1) for m in WINDOW_PARAM.finditer(sent)}
        values |= {m.group(0) for m in ISO_DATE.finditer(sent)}
        found += [(command, v) for v in sorted(values)]
    return found


def _service_limits(now: datetime) -> Limits:
    """The ingest limits of a service on default settings (app.ingest.service._limits)."""
    d = {name: f.default for name, f in Settings.model_fields.items()}
    return Limits(now=now, max_future=timedelta(seconds=d["max_future_seconds"]),
                  max_past=timedelta(days=min(d["max_past_days"], d["retention_days"])),
                  sum_tolerance=d["multiclass_sum_tolerance"])


def test_readme_examples_are_not_refused_in_the_next_60_days(tmp_path):
    """A fixed date in an example passes today and fails CI a month later with no change:
    every timestamp the examples send, evaluated on a day, must be accepted on that day, from
    today until HORIZON, at any time of the day."""
    cli = tmp_path / ".venv" / "bin" / "modelmon"
    cli.parent.mkdir(parents=True)
    cli.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    cli.chmod(0o755)
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    instants = [t + offset for offset in (timedelta(0), HORIZON)
                for t in (now, midnight, midnight + timedelta(days=1, seconds=-1))]
    refused = []
    for instant in instants:
        sent = sent_by_readme(instant, tmp_path)
        assert len({c for c, _ in sent}) >= 5, sent  # predictions, labels, reports, the CLI
        limits = _service_limits(instant)
        for command, value in sent:
            _, problem = parse_timestamp(value, limits)
            if problem:
                refused.append(f"at {instant:%Y-%m-%d %H:%M:%S}: {value!r} {problem}\n"
                               f"  in: {command.splitlines()[0]}")
    assert not refused, "\n".join(refused)
