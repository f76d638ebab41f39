"""Fixtures for the deploy tests: promtool and amtool (installed when missing), and the
webhook sink serving on a free local port."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest
from deploy_support import WEBHOOK_SINK, ToolsMissing, ensure_kubectl, ensure_monitoring_tools


@pytest.fixture(scope="session")
def monitoring_tools() -> dict[str, str]:
    try:
        return ensure_monitoring_tools()
    except ToolsMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def promtool(monitoring_tools: dict[str, str]) -> str:
    return monitoring_tools["promtool"]


@pytest.fixture(scope="session")
def amtool(monitoring_tools: dict[str, str]) -> str:
    return monitoring_tools["amtool"]


@pytest.fixture(scope="session")
def docker_compose(monitoring_tools: dict[str, str]) -> str:
    return monitoring_tools["docker-compose"]


@pytest.fixture(scope="session")
def kubectl() -> str:
    try:
        return ensure_kubectl()
    except ToolsMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def sink() -> Iterator[str]:
    spec = importlib.util.spec_from_file_location("webhook_sink", WEBHOOK_SINK)
    assert spec and spec.loader
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = module.serve("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
