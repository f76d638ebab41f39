"""The OpenAPI spec documents every route, with an example for every request body."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

EXPECTED = {
    ("get", "/healthz"), ("get", "/readyz"),
    ("post", "/v1/models"), ("get", "/v1/models"), ("get", "/v1/models/{model}"),
    ("post", "/v1/models/{model}/versions"), ("get", "/v1/models/{model}/versions"),
    ("post", "/v1/predictions"), ("post", "/v1/labels"),
    ("post", "/v1/models/{model}/versions/{version}/reference"),
    ("get", "/v1/models/{model}/reports/drift"), ("get", "/v1/models/{model}/reports/calibration"),
    ("get", "/v1/models/{model}/reports/cohorts"), ("get", "/v1/models/{model}/history"),
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('o')}/x.db"))
    with TestClient(app) as c:
        body = c.get("/openapi.json").json()
    app.state.engine.dispose()
    return body


def test_every_route_is_documented(spec):
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert EXPECTED <= documented


def test_every_request_body_has_a_schema_and_example(spec):
    schemas = spec["components"]["schemas"]
    posts = [(p, ops["post"]) for p, ops in spec["paths"].items() if "post" in ops]
    assert len(posts) >= 5
    for path, op in posts:
        content = op["requestBody"]["content"]["application/json"]
        assert content["example"], path
        if "schema" in content and "$ref" in content["schema"]:
            ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
            assert ref in schemas, (path, ref)
        elif "schema" in content:  # an upload's JSON body, described inline
            assert content["schema"]["type"] == "object" and content["schema"]["required"]
    # nested references of the body schemas resolve too
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"].rsplit("/", 1)[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    assert set(refs) <= set(schemas)


def test_error_responses_are_documented(spec):
    op = spec["paths"]["/v1/predictions"]["post"]
    assert {"404", "413", "422", "503"} <= set(op["responses"])


def test_every_operation_has_an_example(spec):
    """A request-body example for every POST, a response example for every GET."""
    schemas = spec["components"]["schemas"]

    def has_example(content: dict) -> bool:
        for media in content.values():
            if media.get("example") is not None:
                return True
            ref = media.get("schema", {}).get("$ref", "")
            target = schemas.get(ref.rsplit("/", 1)[-1], {})
            items = media.get("schema", {}).get("items", {}).get("$ref", "")
            target = target or schemas.get(items.rsplit("/", 1)[-1], {})
            if target.get("example") is not None:
                return True
        return False

    missing = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method == "post":
                ok = has_example(op["requestBody"]["content"])
            else:
                ok = any(has_example(r.get("content", {})) for code, r in op["responses"].items()
                         if code.startswith("2"))
            if not ok:
                missing.append(f"{method.upper()} {path}")
    assert missing == []
