"""Fixtures for the deploy tests: promtool and amtool, installed when missing."""

from __future__ import annotations

import pytest
from deploy_support import ToolsMissing, ensure_monitoring_tools


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
