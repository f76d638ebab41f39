"""What the server refuses is reported, not retried, and never holds back the rest; a full
buffer drops and counts without stalling the caller."""

from __future__ import annotations

import socket
import threading

from modelmon_client import Monitor, Refused


def test_a_422_for_one_record_delivers_the_other_999_and_reports_the_one(sqlite_server):
    sqlite_server.register("m422")
    refused: list[Refused] = []
    with Monitor(sqlite_server.url, model="m422", version="v1", batch_size=1000,
                 flush_interval=60, on_refused=refused.extend) as monitor:
        ids = [monitor.log(features={"amount": "12" if i == 437 else float(i)},
                           prediction={"score": 0.1}) for i in range(1000)]
        assert monitor.flush(timeout=60)
        stats = monitor.stats
    assert (stats.sent, stats.refused, stats.dropped, stats.retried) == (999, 1, 0, 0)
    assert sqlite_server.predictions("m422") == 999
    assert sorted(sqlite_server.prediction_ids("m422")) == sorted(ids[:437] + ids[438:])
    [bad] = refused
    assert bad.status == 422 and bad.code == "validation_error"
    assert bad.record["prediction_id"] == ids[437]
    assert [p["field"] for p in bad.problems] == ["features.amount"]


def test_records_of_an_unknown_version_are_refused_and_the_others_delivered(sqlite_server):
    sqlite_server.register("m404")
    refused: list[Refused] = []
    good = Monitor(sqlite_server.url, model="m404", version="v1", on_refused=refused.extend)
    bad = Monitor(sqlite_server.url, model="m404", version="v9", on_refused=refused.extend)
    for i in range(10):
        good.log(features={"amount": 1.0}, prediction={"score": 0.2})
        bad.log(prediction_id=f"bad-{i}", features={"amount": 1.0}, prediction={"score": 0.2})
    assert good.close(timeout=60) and bad.close(timeout=60)
    assert sqlite_server.predictions("m404") == 10
    assert sorted(r.record["prediction_id"] for r in refused) == [f"bad-{i}" for i in range(10)]
    assert {(r.status, r.problems[0]["field"]) for r in refused} == {(404, "version")}
    assert (bad.stats.refused, bad.stats.retried, good.stats.sent) == (10, 0, 10)


def test_a_full_buffer_drops_and_counts_and_never_stalls_the_caller():
    """The server accepts connections and never answers: the sender is stuck in a request;
    the caller's 1,000 calls still return, 100 buffered and 900 dropped."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    monitor = Monitor(f"http://127.0.0.1:{silent.getsockname()[1]}", model="m", version="v1",
                      max_queue=100, batch_size=10, flush_interval=0.01, timeout=300)
    try:
        returned: list[str] = []
        caller = threading.Thread(target=lambda: returned.extend(
            monitor.log(features={"x": float(i)}, prediction={"score": 0.5})
            for i in range(1000)))
        caller.start()
        caller.join(timeout=60)
        assert not caller.is_alive(), "log() blocked"
        assert len(returned) == 1000
        stats = monitor.stats
        assert (stats.queued, stats.dropped, stats.sent, stats.pending) == (100, 900, 0, 100)
        assert not monitor.flush(timeout=0.1)
    finally:
        monitor.close(timeout=0)
        silent.close()
    assert monitor.log(features={}, prediction={"score": 0.5})  # after close: dropped, no error
    assert monitor.stats.dropped >= 901


def test_missing_values_bare_predictions_and_the_task_learned_from_the_server(sqlite_server):
    sqlite_server.register("mbare")
    refused: list[Refused] = []
    with Monitor(sqlite_server.url, model="mbare", version="v1",
                 on_refused=refused.extend) as monitor:  # no task given: read from the server
        monitor.log(prediction_id="nan", features={"amount": float("nan"), "country": "DE"},
                    prediction=0.7, label="fraud")
        monitor.log(prediction_id="row", features={"amount": 3.0}, prediction=[0.4, 0.6])
        monitor.log(prediction_id="inf", features={"amount": float("inf")}, prediction=0.1)
        monitor.log(prediction_id="obj", features={"amount": object()}, prediction=0.1)
        monitor.label("row", "legit")
        assert monitor.flush(timeout=60)
    assert sorted(sqlite_server.prediction_ids("mbare")) == ["nan", "row"]
    assert sqlite_server.labels("mbare") == 2
    assert {r.record["prediction_id"]: (r.status, r.code) for r in refused} == {
        "inf": (422, "validation_error"), "obj": (0, "unsendable")}
