"""The summarizing client: a model server folds its own predictions and sends summaries, and
for label pairing thin outcome rows, never features. Its reports equal raw ingest's; no feature
value is in anything it sends; labels sent later by another process are paired by the service,
once; killed and started again on its spool, it counts everything once."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import zlib

import pytest
from modelmon_client import Monitor
from modelmon_client.summarizing import SummarizingMonitor

from tests.api.test_summaries_api import (
    comparable,
    post_raw,
    reports,
    setup_model,
    traffic,
)
from tests.conftest import ROOT, free_port
from tests.tcp_proxy import TcpProxy


def log_all(mon: SummarizingMonitor, recs: list[dict]) -> None:
    """Inline labels with their prediction; later labels through ``label``."""
    ids = []
    for r in recs:
        inline = "label" in r and r["label_timestamp"] == r["timestamp"]
        ids.append(mon.log(features=r["features"], cohorts=r["cohorts"],
                           prediction=r["prediction"]["score"], timestamp=r["timestamp"],
                           label=r["label"] if inline else None))
    for pid, r in zip(ids, recs, strict=True):
        if "label" in r and r["label_timestamp"] != r["timestamp"]:
            assert mon.label(pid, r["label"], timestamp=r["label_timestamp"])


def bodies(sent: bytes, route: bytes) -> list[dict]:
    """The JSON bodies of the requests to ``route`` in what a client sent."""
    return [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"GET ")[0].split(b"POST ")[0])
            for part in sent.split(b"POST " + route + b" ")[1:]]


@pytest.mark.parametrize("thin_rows", [True, False])
def test_the_summarizing_client_reports_what_raw_ingest_reports_and_sends_no_feature(
        client, live_server, tmp_path, thin_rows):
    """Every byte the client sends is captured: no feature value is in any of it, nor in any
    summary's inflated payload. Thin rows (the default) carry id, time, version, prediction,
    cohorts and inline label; without them nothing but summaries is sent."""
    recs = traffic(900, seed=8)
    secret = 987654.321  # a feature value that must never leave the process
    recs[5]["features"]["amount"] = secret
    recs[6]["features"]["country"] = "SECRET-COUNTRY"
    setup_model(client, "raw")
    setup_model(client, "edge")
    post_raw(client, "raw", recs)

    proxy = TcpProxy(("127.0.0.1", live_server.port), free_port())
    proxy.start()
    try:
        with SummarizingMonitor(f"http://127.0.0.1:{proxy.port}", model="edge",
                                version="v1", spool_dir=tmp_path / "spool",
                                flush_interval=0.2, thin_rows=thin_rows) as mon:
            log_all(mon, recs[:400])
            assert mon.flush(30)
            log_all(mon, recs[400:])
        assert mon.stats.logged == 900 and mon.stats.dropped == 0
    finally:
        proxy.stop()
    assert comparable(reports(client, "edge")) == comparable(reports(client, "raw"))

    sent = b"".join(proxy.sent)
    uploads = bodies(sent, b"/v1/summaries")
    assert uploads and all(b["source"] == mon.source for b in uploads)
    thin = [r for b in bodies(sent, b"/v1/predictions") for r in b["records"]]
    later = [r for b in bodies(sent, b"/v1/labels") for r in b["records"]]
    assert sent.count(b"POST /") == sum(sent.count(b"POST /v1/" + route + b" ") for route in (
        b"summaries", b"predictions", b"labels"))  # no other route is sent anything
    n_later = sum("label" in r and r["label_timestamp"] != r["timestamp"] for r in recs)
    if thin_rows:
        assert all(b["summarized"] is True for b in bodies(sent, b"/v1/predictions"))
        assert len(thin) == 900 == mon.stats.thin_rows_sent
        assert all(r.keys() <= {"model", "version", "prediction_id", "timestamp", "prediction",
                                "cohorts", "label"} for r in thin)
        assert len(later) == mon.stats.labels_sent == n_later
    else:  # labels paired here (the inline ones folded with their prediction)
        assert not thin and not later and mon.stats.labels_paired == n_later
    for needle in (repr(secret).encode(), b"SECRET-COUNTRY", b"p-5"):
        assert needle not in sent
        for b in uploads:
            for s in b["summaries"]:
                raw = base64.b64decode(s["payload"])
                assert needle not in zlib.decompress(raw[1:]) if raw[:1] == b"Z" else raw


def test_thin_rows_the_service_refuses_are_set_aside_and_the_rest_is_sent(
        client, live_server, tmp_path):
    """A part of a spool file refused for good (here thin rows naming a cohort key the model
    does not have) is kept aside with the reason; the summaries of the same fold are sent."""
    setup_model(client, "edge")
    recs = traffic(20, seed=12)
    with SummarizingMonitor(f"http://127.0.0.1:{live_server.port}", model="edge",
                            version="v1", spool_dir=tmp_path, flush_interval=0.2) as mon:
        for r in recs:
            mon.log(features=r["features"], cohorts={**r["cohorts"], "device": "ios"},
                    prediction=r["prediction"]["score"], timestamp=r["timestamp"])
        assert mon.flush(30)
    refused = list(tmp_path.glob("*.refused"))
    assert len(refused) == 1 and ".predictions." in refused[0].name
    kept = json.loads(refused[0].read_text())
    assert "cohorts.device" in kept["error"] and len(kept["body"]) == 20
    assert not list(tmp_path.glob("*.json"))
    assert mon.stats.uploads == 1 and mon.stats.thin_rows_sent == 0
    assert reports(client, "edge")["drift"]["versions"][0]["n"] == 20


LABELER = r"""
import json, sys
from datetime import datetime
from modelmon_client.summarizing import SummarizingMonitor
url, spool, data = sys.argv[1], sys.argv[2], sys.argv[3]
mon = SummarizingMonitor(url, model="edge", version="v1", spool_dir=spool, flush_interval=30,
                         source="labeler")
for r in json.load(open(data)):
    assert mon.label(r["id"], r["label"], timestamp=datetime.fromisoformat(r["ts"]))
print("acked" if mon.flush(60) else "spooled", mon.stats.labels_sent, flush=True)
mon.close()
"""


def test_labels_sent_later_by_other_processes_are_paired_by_the_service_once(
        client, live_server, tmp_path):
    """The model server logs its predictions under its own ids and exits; their later labels
    come from another process's SummarizingMonitor and from a plain Monitor, a third of them
    from both: the drift, calibration and cohort reports equal raw ingest's (each prediction
    and each label counted once)."""
    recs = traffic(700, seed=11)
    setup_model(client, "raw")
    setup_model(client, "edge")
    post_raw(client, "raw", recs)
    url = f"http://127.0.0.1:{live_server.port}"
    with SummarizingMonitor(url, model="edge", version="v1", spool_dir=tmp_path / "server",
                            flush_interval=0.2) as mon:
        for r in recs:
            inline = "label" in r and r["label_timestamp"] == r["timestamp"]
            mon.log(features=r["features"], cohorts=r["cohorts"], timestamp=r["timestamp"],
                    prediction=r["prediction"]["score"], prediction_id=r["prediction_id"],
                    label=r["label"] if inline else None)
        assert mon.flush(60)
    assert mon.stats.thin_rows_sent == 700 and mon.stats.labels_sent == 0
    later = [r for r in recs if "label" in r and r["label_timestamp"] != r["timestamp"]]
    first, second = later[:len(later) * 2 // 3], later[len(later) // 3:]
    data = tmp_path / "labels.json"
    data.write_text(json.dumps([{"id": r["prediction_id"], "label": r["label"],
                                 "ts": r["label_timestamp"].isoformat()} for r in first]))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'client' / 'src'}"}
    child = subprocess.run([sys.executable, "-c", LABELER, url, str(tmp_path / "labeler"),
                            str(data)], capture_output=True, text=True, timeout=120, env=env)
    assert child.stdout.split() == ["acked", str(len(first))], child.stderr
    with Monitor(url, model="edge", version="v1") as plain:
        for r in second:
            plain.label(r["prediction_id"], r["label"], timestamp=r["label_timestamp"])
        assert plain.flush(60)
    assert plain.stats.sent == len(second)
    assert plain.stats.duplicates == len(first) + len(second) - len(later)
    assert comparable(reports(client, "edge")) == comparable(reports(client, "raw"))


CHILD = r"""
import json, sys
from datetime import datetime
from modelmon_client.summarizing import SummarizingMonitor
url, spool, start, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[5])
recs = json.load(open(sys.argv[4]))
mon = SummarizingMonitor(url, model="edge", version="v1", spool_dir=spool, flush_interval=30,
                         source="edge-device-1")
for i in range(start, len(recs), 50):
    for r in recs[i:i + 50]:
        mon.log(features=r["features"], cohorts=r["cohorts"], prediction=r["score"],
                timestamp=datetime.fromisoformat(r["ts"]), label=r.get("label"))
    acked = mon.flush(3)
    print("acked" if acked else "spooled", i + 50, flush=True)
    if i + 50 == stop_at:
        sys.stdin.readline()  # the test changes the world, then lets it go on
"""


def run_child(url: str, spool, start: int, data, stop_at: int = -1) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'client' / 'src'}"}
    return subprocess.Popen([sys.executable, "-c", CHILD, url, str(spool), str(start),
                             str(data), str(stop_at)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, text=True)


def test_killed_and_restarted_on_its_spool_the_client_counts_everything_once(
        client, live_server, tmp_path):
    """Killed with summaries spooled but not sent (the service unreachable), started again
    (the spool is sent first), killed again, and given back a spool file the service had
    already acknowledged (an acknowledgement lost): the reports equal one clean pass."""
    recs = traffic(600, seed=9)
    setup_model(client, "raw")
    setup_model(client, "edge")
    for r in recs:  # inline labels only: a restarted process holds no earlier prediction
        if "label" in r:
            r["label_timestamp"] = r["timestamp"]
    post_raw(client, "raw", recs)
    data = tmp_path / "recs.json"
    data.write_text(json.dumps([
        {"ts": r["timestamp"].isoformat(), "features": r["features"], "cohorts": r["cohorts"],
         "score": r["prediction"]["score"], "label": r.get("label")} for r in recs]))
    spool, kept = tmp_path / "spool", tmp_path / "kept"
    proxy = TcpProxy(("127.0.0.1", live_server.port), free_port())
    proxy.start()
    url = f"http://127.0.0.1:{proxy.port}"

    first = run_child(url, spool, 0, data, stop_at=50)
    assert first.stdout.readline().split() == ["acked", "50"]
    proxy.stop()  # the service goes away: the next chunks are spooled, not sent
    first.stdin.write("\n")
    first.stdin.flush()
    for _ in range(3):
        line = first.stdout.readline().split()
        assert line[0] == "spooled"
    done = int(line[1])
    kept.mkdir()
    for f in spool.glob("*.json"):
        (kept / f.name).write_bytes(f.read_bytes())
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert len(list(kept.iterdir())) >= 1

    proxy.start()
    second = run_child(url, spool, done, data)
    for line in second.stdout:
        word, n = line.split()
        assert word == "acked"
        if int(n) >= done + 150:
            done = int(n)
            break
    second.send_signal(signal.SIGKILL)
    second.wait(30)
    assert not list(spool.glob("*.json"))  # all it spooled was acknowledged

    for f in kept.iterdir():  # acknowledged before, sent again: stored once
        (spool / f.name).write_bytes(f.read_bytes())
    third = run_child(url, spool, done, data)
    out, _ = third.communicate(timeout=120)
    assert out.split()[-1] == "600" and third.returncode == 0
    proxy.stop()
    assert comparable(reports(client, "edge")) == comparable(reports(client, "raw"))


def test_what_cannot_be_folded_yet_is_bounded(tmp_path):
    """Nothing can be folded while the service cannot be reached for the model's profile:
    past ``max_buffer`` records a prediction is dropped and counted, never held without
    bound; the monitor never blocks its caller."""
    mon = SummarizingMonitor(f"http://127.0.0.1:{free_port()}", model="m", version="v1",
                             spool_dir=tmp_path, flush_interval=0.1, max_buffer=10)
    try:
        for i in range(15):
            mon.log(features={"x": float(i)}, prediction=0.5)
        assert mon.stats.logged == 10 and mon.stats.dropped == 5
        assert not mon.flush(0.5)
    finally:
        mon.close(0.2)  # unsent: it stays spooled (nothing was folded here)
