"""Body and batch limits: 413 before parsing, gzip accepted and limited after decompression."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from app.settings import Settings
from tests.factories import prediction, register
from tests.helpers import stored

SMALL = 64 * 1024


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, max_body_bytes=SMALL, max_batch_records=100)


def test_content_length_over_limit_is_413_before_reading(client):
    r = client.post("/v1/predictions", content=b" " * (SMALL + 1),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
    assert "content-length" in r.json()["message"]


def test_streamed_body_without_length_is_cut_off(client):
    def chunks():
        for _ in range(100):
            yield b" " * 4096

    r = client.post("/v1/predictions", content=chunks(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "received" in r.json()["message"]


def test_too_many_records_is_413(client, engine):
    register(client)
    r = client.post("/v1/predictions", json={"records": [prediction(i) for i in range(101)]})
    assert r.status_code == 413
    assert r.json()["code"] == "too_many_records"
    assert "100" in r.json()["message"]
    assert stored(engine)["predictions"] == 0
    assert client.post("/v1/predictions",
                       json={"records": [prediction(i) for i in range(100)]}).status_code == 200


def test_gzip_body_is_accepted(client, engine):
    register(client)
    raw = json.dumps({"records": [prediction(i) for i in range(20)]}).encode()
    r = client.post("/v1/predictions", content=gzip.compress(raw),
                    headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 20


def test_gzip_bomb_is_413(client):
    bomb = gzip.compress(b" " * (40 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < SMALL  # small on the wire, huge inflated
    r = client.post("/v1/predictions", content=bomb,
                    headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 413
    assert "decompression" in r.json()["message"]


def test_corrupt_and_truncated_gzip_are_400(client):
    good = gzip.compress(b'{"records": []}')
    for raw in (b"not gzip at all", good[: len(good) // 2]):
        r = client.post("/v1/predictions", content=raw,
                        headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "invalid_gzip"


def test_unknown_content_encoding_is_415(client):
    r = client.post("/v1/predictions", content=zlib.compress(b"{}"),
                    headers={"content-type": "application/json", "content-encoding": "br"})
    assert r.status_code == 415
