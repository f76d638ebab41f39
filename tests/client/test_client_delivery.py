"""Every record logged arrives exactly once, counted in the database, while the server is
killed and started again, while it answers 503 (its database cut off) and 429 (rate
limited), and when one batch is larger than the server takes (413, split)."""

from __future__ import annotations

import signal
import threading

from modelmon_client import Monitor
from sqlalchemy.engine import make_url

from tests.client.conftest import wait_until
from tests.conftest import free_port
from tests.tcp_proxy import TcpProxy


def record(i: int) -> dict:
    return {"features": {"amount": float(i), "country": "DE"}, "prediction": {"score": 0.5},
            "cohorts": {"region": "eu"}}


def logger(monitor: Monitor, start: int, stop: int, ids: list[str]) -> threading.Thread:
    """A thread logging records start..stop, as a model server's handlers would."""
    def run() -> None:
        for i in range(start, stop):
            ids.append(monitor.log(prediction_id=f"r-{i}", **record(i)))
    t = threading.Thread(target=run)
    t.start()
    return t


def assert_exactly_once(server, model: str, ids: list[str], monitor: Monitor) -> None:
    assert monitor.flush(timeout=300), monitor.stats
    stats = monitor.stats
    assert (stats.queued, stats.sent, stats.dropped, stats.refused) == (len(ids), len(ids), 0, 0)
    assert server.predictions(model) == len(ids)
    assert sorted(server.prediction_ids(model)) == sorted(ids)


def test_records_arrive_exactly_once_across_a_server_kill_and_restart(serve, pg_database):
    server = serve(pg_database)
    server.register("fraud")
    ids: list[str] = []
    with Monitor(server.url, model="fraud", version="v1", batch_size=200,
                 flush_interval=0.05, backoff_base=0.05, backoff_max=0.5) as monitor:
        logger(monitor, 0, 2000, ids).join()
        wait_until(lambda: monitor.stats.sent > 0, "a first batch stored")
        feeder = logger(monitor, 2000, 4000, ids)
        server.stop(signal.SIGKILL)  # in the middle of the traffic: answers may be lost
        feeder.join()
        wait_until(lambda: monitor.stats.retried > 0, "a send failing while the server is down")
        feeder = logger(monitor, 4000, 5000, ids)
        server.start()
        feeder.join()
        assert_exactly_once(server, "fraud", ids, monitor)
        assert monitor.stats.retried > 0


def test_records_arrive_exactly_once_through_503_while_the_database_is_away(serve, pg_database):
    url = make_url(pg_database)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432), free_port())
    proxy.start()
    try:
        server = serve(url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False), MODELMON_DB_CONNECT_TIMEOUT_SECONDS="1",
            MODELMON_RETRY_AFTER_SECONDS="1")
        server.register("fraud")
        ids: list[str] = []
        with Monitor(server.url, model="fraud", version="v1", batch_size=250,
                     flush_interval=0.05) as monitor:
            logger(monitor, 0, 1000, ids).join()
            assert monitor.flush(timeout=120)
            proxy.stop()
            logger(monitor, 1000, 3000, ids).join()
            wait_until(lambda: (monitor.stats.last_error or "").startswith("503 "),
                       "a 503 answered while the database is away")
            proxy.start()
            logger(monitor, 3000, 4000, ids).join()
            assert_exactly_once(server, "fraud", ids, monitor)
    finally:
        proxy.stop()


def test_records_arrive_exactly_once_through_429_with_a_token(serve, pg_database):
    server = serve(pg_database, MODELMON_AUTH="on", MODELMON_RATE_LIMIT_REQUESTS_PER_SECOND="2",
                   MODELMON_RATE_LIMIT_BURST_SECONDS="1")
    admin = server.cli("tokens", "create", "--scope", "admin").splitlines()[0]
    ingest = server.cli("tokens", "create", "--scope", "ingest", "--model", "fraud").splitlines()[0]
    server.register("fraud", token=admin)
    ids: list[str] = []
    with Monitor(server.url, token=ingest, model="fraud", version="v1", batch_size=50,
                 flush_interval=0.01) as monitor:
        feeder = logger(monitor, 0, 2000, ids)
        wait_until(lambda: (monitor.stats.last_error or "").startswith("429 "),
                   "a 429 answered")
        feeder.join()
        assert_exactly_once(server, "fraud", ids, monitor)
        assert monitor.stats.retried > 0


def test_a_batch_over_the_servers_record_limit_is_split_and_delivered(serve, pg_database):
    server = serve(pg_database, MODELMON_MAX_BATCH_RECORDS="300")
    server.register("fraud")
    ids: list[str] = []
    with Monitor(server.url, model="fraud", version="v1", batch_size=1000,
                 flush_interval=60) as monitor:
        logger(monitor, 0, 1000, ids).join()  # one batch of 1,000: 413, then 4 x 250
        assert_exactly_once(server, "fraud", ids, monitor)
        assert monitor.stats.last_error.startswith("413 ")
