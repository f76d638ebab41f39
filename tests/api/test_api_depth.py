"""Deep JSON nesting on every JSON route is a 4xx, never a 5xx: nothing recurses without a
bound (the storable-value check is iterative and stops at 64 levels; parsers that give up
hand over to one that names the problem)."""

from __future__ import annotations

import pytest

MODEL = {"name": "m", "task": "regression", "features": [{"name": "x", "type": "numeric"}]}


@pytest.mark.parametrize("depth", [100, 1000, 1023, 10_000])
def test_deep_nesting_is_refused_on_every_json_route(client, depth):
    assert client.post("/v1/models", json=MODEL).status_code == 201
    assert client.post("/v1/models/m/versions", json={"version": "v1"}).status_code == 201
    deep = "[" * depth + "]" * depth
    bodies = {
        "/v1/models": '{"name": "m2", "task": "regression", "features": [], "x": %s}',
        "/v1/models/m/versions": '{"version": "v2", "metadata": {"a": %s}}',
        "/v1/predictions": '{"records": [{"model": "m", "version": "v1", "features": %s}]}',
        "/v1/labels": '{"records": %s}',
        "/v1/models/m/versions/v1/weights": '{"tensors": %s}',
        "/v1/models/m/versions/v1/reference": '{"records": [{"x": %s}]}',
    }
    for path, template in bodies.items():
        r = client.post(path, content=(template % deep).encode(),
                        headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
        assert r.json()["code"] in ("invalid_json", "validation_error"), path
