"""A model's versions page: each version's regularization, weight norms and sparsity per
layer and overall, and against its predecessor the deltas, the zeroed and revived features
and the checks, every number equal to the compare report's (GET .../versions/compare)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from app.pages.routes import CSP
from tests.jobs_data import drift_model
from tests.pages.pageparse import parse
from tests.pages.pages_data import page_settings
from tests.pages.test_pages import shown_equals

OCTET = {"content-type": "application/octet-stream"}
PAGE = "/ui/models/credit/versions"


@pytest.fixture
def settings(db_url: str):
    return page_settings(db_url)


def npz(tensors: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **tensors)
    return buf.getvalue()


def seed_weights(client) -> None:
    """v1 (L1, lambda 0.001) with f0 and f1 zero; v2 (L1, lambda 0.01) with f1 and f2
    zero and a new layer; v3 (elastic net) without weights."""
    rng = np.random.default_rng(5)
    assert client.post("/v1/models", json=drift_model()).status_code == 201
    for name, reg in (("v1", {"type": "l1", "lambda": 0.001}),
                      ("v2", {"type": "l1", "lambda": 0.01}),
                      ("v3", {"type": "elastic_net", "lambda": 0.1, "l1_ratio": 0.5})):
        r = client.post("/v1/models/credit/versions",
                        json={"version": name, "metadata": {"regularization": reg}})
        assert r.status_code == 201, r.text
    coef = rng.normal(size=(1, 21))
    hidden = rng.normal(size=(21, 8))
    v1, v2 = coef.copy(), coef * 0.7
    v1[0, [0, 1]] = 0.0
    v2[0, [1, 2]] = 0.0
    for name, c, extra in (("v1", v1, {}), ("v2", v2, {"head": np.ones(4)})):
        r = client.post(f"/v1/models/credit/versions/{name}/weights", headers=OCTET,
                        content=npz({"coef": c, "hidden": hidden, "intercept": np.zeros(1),
                                     **extra}))
        assert r.status_code == 201, r.text


def test_the_versions_page_shows_the_compare_reports_numbers(client):
    seed_weights(client)
    r = client.get(PAGE)
    assert r.status_code == 200 and r.headers["content-security-policy"] == CSP
    assert "<script" not in r.text
    fields = parse(r.text).fields
    c = client.get("/v1/models/credit/versions/compare",
                   params={"base": "v1", "candidate": "v2"}).json()
    assert c["features"]["zeroed"] == ["f2"] and c["features"]["revived"] == ["f0"]
    v2 = fields["version:v2"]
    assert v2["zeroed"] == "f2" and v2["revived"] == "f0"
    assert v2["regularization"] == "l1 λ=0.01"
    for key in ("l1", "l2", "sparsity"):
        shown_equals(v2[key], c["candidate"]["overall"][key])
        shown_equals(fields["version:v1"][key], c["base"]["overall"][key])
    shown_equals(v2["sparsity_change_pp"], c["overall"]["sparsity_change_pp"])
    for key in ("l1_relative_change", "l2_relative_change"):
        shown_equals(v2[key], c["overall"][key])
    assert parse(r.text).decisions["version:v2"] == c["checks"]["sparsity_jump"]["decision"]
    for t in c["tensors"]:  # per layer: v2's own figures and the change from v1
        row = fields[f"cohort:v2:{t['name']}"]
        shown_equals(row["l1"], t["l1_candidate"])
        shown_equals(row["l2"], t["l2_candidate"])
        shown_equals(row["sparsity"], t["sparsity_candidate"])
        shown_equals(row["sparsity_change_pp"], t["sparsity_change_pp"])
        shown_equals(row["l1_relative_change"], t["l1_relative_change"])
        first = fields[f"cohort:v1:{t['name']}"]
        shown_equals(first["l1"], t["l1_base"])
        shown_equals(first["sparsity"], t["sparsity_base"])
    assert c["added"] == ["head"] and "cohort:v2:head" in fields
    assert "l1_relative_change" not in fields["cohort:v2:head"]  # new: nothing to compare
    assert fields["version:v3"]["regularization"] == "elastic_net λ=0.1 l1_ratio=0.5"
    assert "no weights uploaded" in r.text


def test_the_models_page_links_each_models_versions_page(client):
    seed_weights(client)
    assert f'href="{PAGE}"' in client.get("/ui").text


def test_an_unknown_model_is_404(client):
    r = client.get("/ui/models/nope/versions")
    assert r.status_code == 404 and r.json()["code"] == "unknown_model"
