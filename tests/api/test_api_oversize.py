"""An over-limit body is answered 413 that a client writing its whole body before reading
(Python's urllib) can read, instead of a connection reset it would retry forever."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from app.main import create_app
from app.settings import Settings
from tests.conftest import LiveServer, clean


@pytest.mark.parametrize("declare_length", [True, False])
def test_urllib_reads_the_413(db_url, declare_length):
    app = create_app(Settings(database_url=db_url), run_scheduler=False)
    body = b'{"records": [' + b'{"model": "m"},' * 800_000 + b'{}]}'  # about 12 MiB
    assert len(body) > 11 * 1024 * 1024
    try:
        with LiveServer(app) as server:
            def chunks():
                for i in range(0, len(body), 1 << 16):
                    yield body[i:i + (1 << 16)]
            req = urllib.request.Request(
                f"{server.url}/v1/predictions", data=body if declare_length else chunks(),
                headers={"Content-Type": "application/json"}, method="POST")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=30)
            assert err.value.code == 413
            assert json.loads(err.value.read())["code"] == "payload_too_large"
    finally:
        clean(app.state.engine)
        app.state.engine.dispose()
