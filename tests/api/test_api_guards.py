"""What a browser on the same machine cannot do to the loopback default (tokens off): send a
body cross-site (every body must state its Content-Type, which a cross-site form or a
`text/plain` fetch cannot) or reach the service under another name (DNS rebinding: Host must
be loopback or allowed); and what a client cannot pick: the address its rate limits count,
forwarded headers being trusted only from MODELMON_TRUSTED_PROXIES."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.guards import ForwardedClient, LoopbackHosts
from app.cli.serve import uvicorn_options
from app.main import create_app
from app.settings import Settings
from tests.conftest import clean
from tests.factories import NOW, binary_model, iso, prediction, register, version

HOUR = timedelta(hours=1)

# Every route that reads a body, with a body it accepts as JSON.
BODIES = [
    ("POST", "/v1/models", binary_model("other")),
    ("PATCH", "/v1/models/fraud", {"policy": {}}),
    ("POST", "/v1/models/fraud/versions", version("v2")),
    ("PATCH", "/v1/models/fraud/versions/v1", {"training": {}}),
    ("POST", "/v1/predictions", {"records": [prediction(0)]}),
    ("POST", "/v1/labels", {"records": []}),
    ("POST", "/v1/models/fraud/maintenance", {"start": iso(NOW), "end": iso(NOW + HOUR),
                                              "reason": "retrain"}),
    ("POST", "/v1/models/fraud/versions/v1/reference",
     {"records": [{"amount": 1.0, "country": "DE", "score": 0.5}] * 3}),
    ("POST", "/v1/models/fraud/versions/v1/weights",
     {"tensors": [{"name": "coef", "shape": [2], "count": 2, "zeros": 0, "l1": 1.0,
                   "l2": 1.0, "max_abs": 1.0, "mean": 0.5, "std": 0.1}]}),
]


@pytest.fixture
def loopback(db_url: str) -> Iterator[TestClient]:
    """The loopback default (tokens off), with no extra host names allowed."""
    app = create_app(Settings(database_url=db_url, allowed_hosts=""), run_scheduler=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        register(client)
        yield client
    clean(app.state.engine)
    app.state.engine.dispose()


@pytest.mark.parametrize(("method", "path", "body"), BODIES)
def test_a_body_without_an_accepted_content_type_is_415(loopback, method, path, body):
    raw = json.dumps(body).encode()
    for ctype in (None, "text/plain", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x"):
        headers = {} if ctype is None else {"content-type": ctype}
        r = loopback.request(method, path, content=raw, headers=headers)
        assert r.status_code == 415, (ctype, r.status_code, r.text)
        assert r.json()["code"] == "unsupported_media_type"
        detail = r.json()["details"][0]
        assert detail["field"] == "content-type"
        assert detail["problem"] == ("no content-type header" if ctype is None
                                     else f"content-type {ctype.split(';')[0]!r} is not "
                                          "supported")
    # the same bytes, said to be JSON (also as a structured +json type), are taken
    for ctype in ("application/json", "application/json; charset=utf-8",
                  "application/vnd.modelmon+json"):
        r = loopback.request(method, path, content=raw, headers={"content-type": ctype})
        assert r.status_code < 300, (ctype, r.status_code, r.text)


def test_uploads_say_what_they_are_too(loopback):
    buf = io.BytesIO()
    np.savez(buf, coef=np.ones((1, 2)))
    r = loopback.post("/v1/models/fraud/versions/v1/weights", content=buf.getvalue())
    assert r.status_code == 415 and r.json()["details"][0]["field"] == "content-type"
    r = loopback.post("/v1/models/fraud/versions/v1/weights", content=buf.getvalue(),
                      headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "attacker.test.",
                                  "10.0.0.1:8000", "localhost.evil.example", "[::2]:8000"])
def test_a_foreign_host_is_421_on_the_loopback_default(loopback, host):
    for method, path, body in (("GET", "/v1/models", None), ("GET", "/metrics", None),
                               ("POST", "/v1/models", binary_model("x"))):
        r = loopback.request(method, path, json=body, headers={"host": host})
        assert r.status_code == 421, (method, path, r.status_code)
        assert r.json()["code"] == "host_not_allowed"
        assert r.json()["details"][0]["field"] == "host"
    assert loopback.get("/v1/models/x", headers={"host": "127.0.0.1"}).status_code == 404


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1",
                                  "127.0.0.1:8000", "127.8.9.10", "[::1]", "[::1]:8000"])
def test_loopback_names_are_served(loopback, host):
    assert loopback.get("/v1/models", headers={"host": host}).status_code == 200


def test_allowed_hosts_and_tokens_lift_the_host_check(db_url):
    guard = LoopbackHosts(None, " box.internal ,Other.Example:9000")  # type: ignore[arg-type]
    assert guard.allows("box.internal:8000") and guard.allows("other.example")
    assert not guard.allows("box.internal.evil")
    for settings, status in ((Settings(database_url=db_url, allowed_hosts="box.internal"),
                              200),
                             # tokens required: a browser has no token to send, no Host check
                             (Settings(database_url=db_url, allowed_hosts="", auth="on"), 401),
                             # tokens off beyond loopback: the names are not known
                             (Settings(database_url=db_url, allowed_hosts="", auth="off",
                                       host="0.0.0.0"), 200)):
        app = create_app(settings, run_scheduler=False)
        with TestClient(app) as c:
            assert c.get("/v1/models", headers={"host": "box.internal"}).status_code == status
        app.state.engine.dispose()


def forwarding_app(db_url: str, **over: object) -> TestClient:
    # a burst of 3 requests per address, refilled so slowly (one per 100 s) that a slow
    # machine's requests cannot earn a fourth
    app = create_app(Settings(database_url=db_url, rate_limit_requests_per_second=0.01,
                              rate_limit_burst_seconds=300, **over), run_scheduler=False)
    return TestClient(app, client=("127.0.0.1", 40000))


def statuses(client: TestClient, headers: list[dict[str, str]]) -> list[int]:
    return [client.get("/v1/models", headers=h).status_code for h in headers]


def test_x_forwarded_for_is_ignored_unless_from_a_trusted_proxy(db_url):
    spoofed = [{"x-forwarded-for": f"203.0.113.{i}"} for i in range(4)]
    with forwarding_app(db_url) as c:  # 3 requests per address
        assert statuses(c, spoofed) == [200, 200, 200, 429]
    with forwarding_app(db_url, trusted_proxies="10.0.0.0/8, 127.0.0.1") as c:
        # from the trusted proxy: each forwarded client is counted apart ...
        assert statuses(c, spoofed) == [200] * 4
        # ... by the nearest address no trusted proxy vouches for: what a client wrote
        # before it (here 198.51.100.1) cannot move it
        chain = [{"x-forwarded-for": f"198.51.100.{i}, 192.0.2.7, 10.1.2.3"} for i in range(4)]
        assert statuses(c, chain) == [200, 200, 200, 429]
        # the other header is not the proxies': ignored, the proxy's own address counts
        assert statuses(c, [{"forwarded": f"for=203.0.113.{i + 9}"} for i in range(4)]) \
            == [200, 200, 200, 429]
    with forwarding_app(db_url, trusted_proxies="127.0.0.1", forwarded_header="forwarded") as c:
        assert statuses(c, [{"forwarded": f'for="[2001:db8::{i}]:4711";proto=https'}
                            for i in range(4)]) == [200] * 4
    with forwarding_app(db_url, trusted_proxies="10.0.0.0/8") as c:  # not this peer
        assert statuses(c, spoofed) == [200, 200, 200, 429]


def test_the_client_address_behind_proxies():
    guard = ForwardedClient(None, "10.0.0.0/8,::1", "x-forwarded-for")  # type: ignore[arg-type]
    assert guard.client_of("10.0.0.5", ["1.2.3.4"]) == "1.2.3.4"
    assert guard.client_of("10.0.0.5", ["1.2.3.4", "10.9.9.9"]) == "1.2.3.4"
    assert guard.client_of("10.0.0.5", ["6.6.6.6", "1.2.3.4"]) == "1.2.3.4"
    assert guard.client_of("10.0.0.5", ["garbage", "10.0.0.6"]) == "10.0.0.6"
    assert guard.client_of("10.0.0.5", []) == "10.0.0.5"
    assert guard.client_of("192.0.2.1", ["1.2.3.4"]) == "192.0.2.1"  # not a proxy
    assert guard.client_of("::1", ["[2001:db8::1]:80"]) == "2001:db8::1"


def test_serve_leaves_forwarded_headers_to_the_app():
    """uvicorn would take X-Forwarded-For from any client on 127.0.0.1 (its default)."""
    assert uvicorn_options(Settings(), None)["proxy_headers"] is False


def test_trusted_proxies_must_be_addresses():
    with pytest.raises(ValueError, match="MODELMON_TRUSTED_PROXIES: 'proxy.internal' is not"):
        Settings(trusted_proxies="10.0.0.0/8, proxy.internal")
