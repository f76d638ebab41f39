"""Generated requests for every operation of the OpenAPI spec, with an admin token, against
the app on a real database: no input makes a 5xx, and every answer matches the spec's shape
for its status. Bounded: a fixed number of examples per operation, derandomised."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.settings import Settings
from app.storage import migrate, tokens
from tests.conftest import clean

_state: dict = {}


def _app():
    """One app for the module, on the session's Postgres, with a model and a version."""
    if "app" not in _state:
        from tests.conftest import create_pg_database

        url = create_pg_database("modelmon_schemathesis")
        # the spec is loaded without a token (docs public); the operations are called with one
        app = create_app(Settings(database_url=url, auth="on", rate_limit_requests_per_second=0,
                                  rate_limit_records_per_second=0, docs_public=True),
                         run_scheduler=False)
        migrate.upgrade(app.state.engine)
        with app.state.engine.begin() as conn:
            _state["token"] = tokens.create(conn=conn, name="fuzz",
                                            scopes=["admin", "ingest"], models=None,
                                            expires_at=None)[1]
        _state.update(app=app, url=url)
    return _state["app"]


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@pytest.fixture(scope="module", autouse=True)
def _teardown():
    yield
    from tests.conftest import drop_pg_database

    app = _state["app"]
    clean(app.state.engine)
    app.state.engine.dispose()
    drop_pg_database(_state["url"])


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case):
    case.headers = {**(case.headers or {}), "authorization": f"Bearer {_state['token']}"}
    case.call_and_validate(
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance])
