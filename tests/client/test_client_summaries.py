"""The summarizing client: a model server folds its own predictions and sends summaries only.
Its reports equal raw ingest's; no feature value is in anything it sends; killed and started
again on its spool, it counts everything once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

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


def test_the_summarizing_client_reports_what_raw_ingest_reports_and_sends_no_feature(
        client, live_server, tmp_path):
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
                                flush_interval=0.2) as mon:
            log_all(mon, recs[:400])
            assert mon.flush(30)
            log_all(mon, recs[400:])
        assert mon.stats.logged == 900 and mon.stats.dropped == 0
    finally:
        proxy.stop()
    assert comparable(reports(client, "edge")) == comparable(reports(client, "raw"))

    sent = b"".join(proxy.sent)
    assert b"POST /v1/summaries" in sent
    bodies = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"GET ")[0].split(b"POST ")[0])
              for part in sent.split(b"POST /v1/summaries")[1:]]
    assert bodies and all(b["source"] == mon.source for b in bodies)
    import base64
    import zlib

    for needle in (repr(secret).encode(), b"SECRET-COUNTRY", b"p-5"):
        assert needle not in sent
        for b in bodies:
            for s in b["summaries"]:
                raw = base64.b64decode(s["payload"])
                assert needle not in zlib.decompress(raw[1:]) if raw[:1] == b"Z" else raw


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
