"""`modelmon import`: predictions and labels from Parquet, CSV and JSON lines through a live
server, each row stored once; an import interrupted mid-way (SIGINT to the real process) and
run again stores the rest and nothing twice, with and without a state file; its errors are
one line on stderr."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select

from app import cli
from app.storage.tables import labels, prediction_keys, predictions
from tests.cli.test_report_cli import modelmon
from tests.conftest import ROOT, free_port
from tests.factories import NOW, binary_model, iso, version


def one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    """A failed import: its error is the last line of stderr, one line, after the progress
    and notes it printed until then; no traceback."""
    assert out.returncode not in (0, 130), (out.returncode, out.stderr)
    assert out.stdout == "" and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert [ln for ln in lines if "error" in ln] == lines[-1:], out.stderr
    assert lines[-1].startswith("modelmon import: error: ")
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]

COLUMNS = ["prediction_id", "timestamp", "version", "amount", "country", "region", "score",
           "predicted_label", "label", "latency_ms", "note"]


def rows(prefix: str, n: int) -> list[dict]:
    return [{"prediction_id": f"{prefix}{i}", "timestamp": iso(NOW - timedelta(seconds=i)),
             "version": "v1" if i % 3 else "v2", "amount": None if i % 7 == 0 else i * 1.5,
             "country": ["DE", "FR", None][i % 3], "region": ["eu", "us"][i % 2],
             "score": (i % 10) / 10, "predicted_label": "fraud" if i % 10 >= 5 else "legit",
             "label": ["legit", "fraud", None][i % 3], "latency_ms": 3.0, "note": "x"}
            for i in range(n)]


def write(path: Path, data: list[dict]) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(data), path)
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows({k: "" if v is None else v for k, v in r.items()} for r in data)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


def count(engine, table, prefix: str = "") -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(
            table.c.prediction_id.startswith(prefix))).scalar_one())


def register(client) -> None:
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    for v in ("v1", "v2"):
        assert client.post("/v1/models/fraud/versions", json=version(v)).status_code == 201


def test_each_format_stores_every_row_once(client, engine, live_server, tmp_path, capsys):
    register(client)
    url = ["--url", live_server.url, "--model", "fraud", "--batch-size", "40"]
    for prefix, suffix in (("p", ".parquet"), ("c", ".csv"), ("j", ".jsonl")):
        path = write(tmp_path / f"log{suffix}", rows(prefix, 250))
        assert cli.main(["import", str(path), *url]) == 0
        out = capsys.readouterr()
        assert out.out.strip() == f"log{suffix}: 250 predictions sent to fraud: 250 stored, " \
                                  "0 already stored"
        assert "ignoring columns: note" in out.err
        assert count(engine, predictions, prefix) == 250
        # inline labels: two rows in three carry one
        assert count(engine, labels, prefix) == len([r for r in rows(prefix, 250) if r["label"]])
        # again: nothing is stored twice
        assert cli.main(["import", str(path), *url]) == 0
        assert "0 stored, 250 already stored" in capsys.readouterr().out
        assert count(engine, predictions, prefix) == count(engine, prediction_keys, prefix) \
            == 250
    # the same row reads back the same from each format
    with engine.connect() as conn:
        stored = {r.prediction_id[0]: r for r in conn.execute(select(predictions).where(
            predictions.c.prediction_id.in_(["p13", "c13", "j13"])))}
    p, c, j = (stored[k] for k in "pcj")
    for a in (c, j):
        assert (a.features, a.cohorts, a.score, a.predicted_label, a.latency_ms, a.ts,
                a.version_id) == (p.features, p.cohorts, p.score, p.predicted_label,
                                  p.latency_ms, p.ts, p.version_id)
    assert p.features == {"amount": 19.5, "country": "FR"}  # None is missing

    # late labels for the rows that had none, from CSV
    late = [{"prediction_id": f"p{i}", "label": "fraud", "timestamp": iso(NOW)}
            for i in range(2, 250, 3)]
    path = write(tmp_path / "labels.csv", late)
    assert cli.main(["import", str(path), "--labels", *url]) == 0
    assert "83 matched, 0 waiting for their prediction, 0 already stored" in \
        capsys.readouterr().out
    assert count(engine, labels, "p") == 250


def rows_done(state: Path) -> int:
    try:
        return json.loads(state.read_text())["rows_done"]
    except (FileNotFoundError, ValueError):  # not written yet (it is replaced atomically)
        return 0


def test_an_interrupted_import_resumes_and_stores_nothing_twice(client, engine, live_server,
                                                                tmp_path):
    """The first run reads a named pipe that delivers half of the rows and then waits: once
    the service holds those rows, the process gets SIGINT. The file is then run again, whole,
    with the same state file (it skips what was confirmed), and once more without one (every
    record comes back as already stored)."""
    register(client)
    data = rows("r", 2000)
    full = write(tmp_path / "log.jsonl", data)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    state = tmp_path / "import.state"
    args = ["--url", live_server.url, "--model", "fraud", "--batch-size", "100",
            "--state", str(state)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # SIGINT as a terminal sends it, also where the test itself runs with SIGINT ignored
    # (a background job of a non-interactive shell: the child would inherit that)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "import", str(fifo),
                             "--format", "jsonl", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        with fifo.open("w") as pipe:
            pipe.write("".join(json.dumps(r) + "\n" for r in data[:1000]))
            pipe.flush()
            deadline = time.monotonic() + 120
            # the service holding the rows is not enough: the importer must also have read
            # the answer to the last batch (it records it in the state file), or SIGINT lands
            # between the two and it rightly reports only the rows it saw confirmed
            while count(engine, predictions, "r") < 1000 or rows_done(state) < 1000:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the first half never arrived"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted; rows 1-1000 are stored; run the same command again" in err
    assert count(engine, predictions, "r") == 1000
    assert json.loads(state.read_text())["rows_done"] == 1000

    # the state file names the file it was made for: the whole file is another one
    again = modelmon("import", str(full), *args, cwd=tmp_path)
    one_line_error(again, "belongs to another import")
    fifo.unlink()
    os.replace(full, fifo)  # the same path, now a file holding every row
    again = modelmon("import", str(fifo), "--format", "jsonl", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == ("pipe: 1000 predictions sent to fraud: 1000 stored, "
                                    "0 already stored, 1000 confirmed by an earlier run "
                                    "(--state)")
    assert count(engine, predictions, "r") == count(engine, prediction_keys, "r") == 2000
    # without the state file every row is sent again, and none is stored twice
    again = modelmon("import", str(fifo), "--format", "jsonl", *args[:-2], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 stored, 2000 already stored" in again.stdout
    assert count(engine, predictions, "r") == count(engine, prediction_keys, "r") == 2000
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(predictions.c.prediction_id).where(
            predictions.c.prediction_id.startswith("r")))]
    assert sorted(ids) == sorted(r["prediction_id"] for r in data)
    # a state file that does not match the rows (another file at that path) is refused
    write(fifo.with_suffix(".jsonl"), rows("other", 2000))
    os.replace(fifo.with_suffix(".jsonl"), fifo)
    one_line_error(modelmon("import", str(fifo), "--format", "jsonl", *args, cwd=tmp_path),
                   "does not match pipe")


def test_import_errors_are_one_line_on_stderr(client, engine, live_server, tmp_path):
    register(client)
    good = write(tmp_path / "log.csv", rows("e", 30))
    base = ["--url", live_server.url, "--model", "fraud", "--batch-size", "10"]
    one_line_error(modelmon("import", str(good), "--url", f"http://127.0.0.1:{free_port()}",
                            "--model", "fraud", "--retries", "0", cwd=tmp_path),
                   "cannot reach modelmon")
    one_line_error(modelmon("import", str(good), *base[:2], "--model", "ghost", cwd=tmp_path),
                   "404", "'ghost' is not registered")
    one_line_error(modelmon("import", str(tmp_path / "nothing.csv"), *base, cwd=tmp_path),
                   "no file")
    odd = tmp_path / "log.txt"
    odd.write_text("x")
    one_line_error(modelmon("import", str(odd), *base, cwd=tmp_path), "--format")
    no_score = write(tmp_path / "no_score.csv", [
        {k: v for k, v in r.items() if k != "score"} for r in rows("n", 5)])
    one_line_error(modelmon("import", str(no_score), *base, cwd=tmp_path), "no column score")
    # row 25 names a class the model does not have: the batch holding it is refused, the
    # batches before it are stored
    data = rows("b", 30)
    data[24]["label"] = "maybe"
    bad = write(tmp_path / "bad.jsonl", data)
    line = one_line_error(modelmon("import", str(bad), *base, cwd=tmp_path), "422",
                          "records[4].label", "in rows 25 of the file",
                          "rows 1-20 are stored; run the same command again")
    assert "Traceback" not in line
    assert count(engine, predictions, "b") == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["log.csv", "log.txt", "no_score.csv", "bad.jsonl"])


def test_multiclass_with_integer_classes_from_csv_and_parquet(client, engine, live_server,
                                                              tmp_path, capsys):
    from tests.factories import multiclass_model

    assert client.post("/v1/models", json=multiclass_model("digits", classes=[0, 1, 2])
                       ).status_code == 201
    assert client.post("/v1/models/digits/versions", json=version()).status_code == 201
    data = [{"prediction_id": f"m{i}", "timestamp": iso(NOW - timedelta(seconds=i)),
             "petal": i / 10, "probabilities": json.dumps({"0": 0.1, "1": 0.2, "2": 0.7}),
             "predicted_label": 2, "label": i % 3} for i in range(20)]
    write(tmp_path / "digits.csv", data)
    # in Parquet: probabilities as a struct, labels as integers
    pq.write_table(pa.Table.from_pylist([
        {**r, "prediction_id": "q" + r["prediction_id"],
         "probabilities": json.loads(r["probabilities"])} for r in data]),
        tmp_path / "digits.parquet")
    for name in ("digits.csv", "digits.parquet"):
        assert cli.main(["import", str(tmp_path / name), "--url", live_server.url, "--model",
                         "digits", "--version", "v1"]) == 0
        assert "20 stored, 0 already stored" in capsys.readouterr().out
    with engine.connect() as conn:
        got = {r.prediction_id: (r.predicted_label, json.loads(r.probabilities) if isinstance(
            r.probabilities, str) else r.probabilities)
            for r in conn.execute(select(predictions))}
        truth = {r.prediction_id: r.label_class for r in conn.execute(select(labels))}
    assert len(got) == 40
    assert all(v == ("2", {"0": 0.1, "1": 0.2, "2": 0.7}) for v in got.values()), got
    assert truth == {f"{p}m{i}": str(i % 3) for p in ("", "q") for i in range(20)}
