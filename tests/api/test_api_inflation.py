"""Uploads are bounded by what they become, not only by what is sent: an .npz, a .safetensors,
a gzip body and a Parquet (or CSV) reference that would inflate past a limit are refused with a
413 naming the limit and where, before the memory is spent, and a real `modelmon serve` keeps
its peak memory within twice its idle size while refusing them."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import httpx2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, create_pg_database, drop_pg_database, free_port
from tests.factories import register
from tests.helpers import wait_ready

MIB = 1 << 20
BLOCK = 1 << 20
OCTETS = {"Content-Type": "application/octet-stream"}
GZIP_OCTETS = {**OCTETS, "Content-Encoding": "gzip"}
WEIGHTS = "/v1/models/fraud/versions/v1/weights"
REFERENCE = "/v1/models/fraud/versions/v1/reference"


# --- bombs: small to send, huge once read ------------------------------------------------

def deflated(head: bytes, blocks: int, fill: bytes = b"\0") -> tuple[bytes, int, int]:
    """(raw deflate, crc32, size) of ``head`` followed by ``blocks`` MiB of ``fill``, made
    without compressing them all: after a full flush, each identical block compresses to the
    same bytes, so the stream repeats one."""
    block = fill * BLOCK
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    one = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(blocks):
        crc = zlib.crc32(block, crc)
    return first + one * blocks + c.flush(), crc, len(head) + blocks * BLOCK


def gzip_bomb(head: bytes, blocks: int, fill: bytes = b"\0") -> bytes:
    data, crc, size = deflated(head, blocks, fill)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + data
            + struct.pack("<II", crc, size & 0xFFFFFFFF))


def npz_bomb(mib: int, shape: tuple[int, ...] | None = None) -> bytes:
    """An .npz of one float32 tensor of zeros, ``mib`` MiB once decompressed (about 1 KB per
    GiB sent), as np.savez_compressed writes it; ``shape``: what its npy header declares,
    if not that."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {
        "descr": "<f4", "fortran_order": False, "shape": shape or (mib * BLOCK // 4,)})
    data, crc, size = deflated(header.getvalue(), mib)
    name = b"w.npy"
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data),
                        size, len(name), 0) + name
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc,
                          len(data), size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                      len(local) + len(data), 0)
    return local + data + central + end


def safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def parquet_bomb(path: Path, rows: int, *, dictionary: bool = True,
                 compression: str = "snappy") -> Path:
    """A Parquet reference of ``rows`` zeros in one numeric column, written a million rows at
    a time (so neither this process nor the file holds them)."""
    schema = pa.schema([("amount", pa.float64())])
    with pq.ParquetWriter(path, schema, use_dictionary=dictionary,
                          compression=compression) as w:
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            w.write_table(pa.table({"amount": pa.array(np.zeros(n))}, schema=schema))
    return path


def assert_413(r: httpx2.Response, setting: str, field: str | None = None) -> None:
    assert r.status_code == 413, r.text[:500]
    body = r.json()
    assert body["code"] == "payload_too_large"
    assert setting in body["message"] or setting in json.dumps(body["details"])
    if field is not None:
        assert body["details"][0]["field"] == field, body


# --- each refused with a 413 naming the limit ----------------------------------------------

@pytest.fixture
def registered(client):
    register(client)
    return client


LOW_LIMITS = {"weights_max_inflated_bytes": 64 * MIB, "reference_max_rows": 10_000,
              "reference_max_bytes": 1 * MIB}


@pytest.mark.parametrize("settings", [LOW_LIMITS], indirect=True)
def test_an_npz_that_inflates_past_the_limit_is_413_naming_it(registered):
    bomb = npz_bomb(256)
    assert len(bomb) < MIB
    r = registered.post(WEIGHTS, content=bomb, headers=OCTETS)
    assert_413(r, "MODELMON_WEIGHTS_MAX_INFLATED_BYTES", "w")
    assert "268435" in r.json()["message"]  # the declared size, from the zip headers
    # within the limit, the same kind of file is read (in chunks) and stored
    r = registered.post(WEIGHTS, content=npz_bomb(32), headers=OCTETS)
    assert r.status_code == 201, r.text
    assert r.json()["overall"]["sparsity"] == 1.0


def test_an_npz_whose_npy_header_lies_about_its_shape_is_422(registered):
    lying = npz_bomb(1, shape=(10 * BLOCK // 4,))  # ten times what the member holds
    r = registered.post(WEIGHTS, content=lying, headers=OCTETS)
    assert r.status_code == 422 and "more than the member holds" in r.text, r.text


@pytest.mark.parametrize("settings", [LOW_LIMITS], indirect=True)
def test_a_safetensors_declaring_more_than_the_limit_is_413_before_reading(registered):
    huge = {"big": {"dtype": "F32", "shape": [1 << 38], "data_offsets": [0, 1 << 40]},
            "small": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    r = registered.post(WEIGHTS, content=safetensors(huge, b"\0" * 8), headers=OCTETS)
    assert_413(r, "MODELMON_WEIGHTS_MAX_INFLATED_BYTES", "big")


def test_a_safetensors_header_past_the_json_limit_is_413_even_gzipped(registered):
    """The header is JSON parsed into memory: held to MODELMON_MAX_BODY_BYTES like any JSON
    body, here sent as 11 MiB that gzip makes a few KB."""
    header = {"__metadata__": {"pad": "x" * (11 * MIB)},
              "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    body = zlib.compress(safetensors(header, b"\0" * 8), 9, 31)
    assert len(body) < 100_000
    r = registered.post(WEIGHTS, content=body, headers=GZIP_OCTETS)
    assert_413(r, "MODELMON_MAX_BODY_BYTES", "safetensors header")


def test_a_gzip_body_that_inflates_past_the_limit_is_413_naming_it(registered):
    bomb = gzip_bomb(b'{"records": [', 64, fill=b" ")
    assert len(bomb) < 200_000
    r = registered.post("/v1/predictions", content=bomb, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert_413(r, "MODELMON_MAX_BODY_BYTES", "body")
    assert "after gzip decompression" in r.json()["message"]


@pytest.mark.parametrize("settings", [{**LOW_LIMITS, "weights_max_bytes": 16 * MIB}],
                         indirect=True)
def test_a_gzip_upload_that_inflates_past_its_limit_is_413_naming_it(registered):
    r = registered.post(WEIGHTS, content=gzip_bomb(b"", 64), headers=GZIP_OCTETS)
    assert_413(r, "MODELMON_WEIGHTS_MAX_BYTES", "body")


@pytest.mark.parametrize("settings", [LOW_LIMITS], indirect=True)
def test_a_parquet_reference_past_the_row_limit_is_413_from_its_metadata(registered, tmp_path):
    path = parquet_bomb(tmp_path / "ref.parquet", 2_000_000)
    assert path.stat().st_size < 200_000
    r = registered.post(REFERENCE, content=path.read_bytes(),
                        headers={"Content-Type": "application/vnd.apache.parquet"})
    assert_413(r, "MODELMON_REFERENCE_MAX_ROWS", "body")
    assert "2000000 rows" in r.json()["message"]


@pytest.mark.parametrize("settings", [{**LOW_LIMITS, "reference_max_rows": 1_000_000}],
                         indirect=True)
def test_a_parquet_column_past_the_bytes_limit_once_decompressed_is_413_naming_it(
        registered, tmp_path):
    path = parquet_bomb(tmp_path / "ref.parquet", 500_000, dictionary=False,
                        compression="zstd")
    assert path.stat().st_size < MIB  # within what may be sent
    r = registered.post(REFERENCE, content=path.read_bytes(),
                        headers={"Content-Type": "application/vnd.apache.parquet"})
    assert_413(r, "MODELMON_REFERENCE_MAX_BYTES", "amount")


@pytest.mark.parametrize("settings", [LOW_LIMITS], indirect=True)
def test_a_gzip_csv_reference_past_the_row_limit_is_413(registered):
    body = zlib.compress(b"amount,country\n" + b"1.5,DE\n" * 20_000, 9, 31)
    r = registered.post(REFERENCE, content=body, headers={
        "Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert_413(r, "MODELMON_REFERENCE_MAX_ROWS", "body")


@pytest.mark.parametrize("settings", [LOW_LIMITS], indirect=True)
def test_references_within_the_limits_are_stored(registered, tmp_path):
    csv = b"amount,country,score,extra\n" + b"".join(
        f"{i % 97}.5,{['DE', 'FR', '7'][i % 3]},0.{i % 10},x\n".encode() for i in range(5000))
    r = registered.post(REFERENCE, content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 201, r.text
    assert r.json()["n_rows"] == 5000 and r.json()["ignored_columns"] == ["extra"]
    assert r.json()["features"]["country"]["n_valid"] == 5000
    table = pa.table({"amount": np.arange(5000, dtype=np.float64),
                      "country": pa.array([["DE", "FR", None][i % 3] for i in range(5000)])})
    pq.write_table(table, tmp_path / "ok.parquet")
    r = registered.post(REFERENCE, content=(tmp_path / "ok.parquet").read_bytes(),
                        headers={"Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 201, r.text
    country = r.json()["features"]["country"]
    assert (country["n_valid"], country["n_missing"]) == (3334, 1666)


# --- a real server's memory while refusing them --------------------------------------------

def peak_rss(pid: int) -> int:
    """VmHWM: the process's peak resident memory so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def served(tmp_path):
    """`modelmon serve` on its own PostgreSQL database, with the default limits except the
    inflated size of weights (so that a 1 GiB bomb is past it while a 128 MiB file is not)
    and the bytes of a weights upload (so that the gzip bomb's decompression stops early)."""
    db = create_pg_database("modelmon_inflation")
    port = free_port()
    env = {**os.environ, "MODELMON_DATABASE_URL": db, "MODELMON_LOG_LEVEL": "warning",
           "MODELMON_SCHEDULER_ENABLED": "false",
           "MODELMON_WEIGHTS_MAX_INFLATED_BYTES": str(256 * MIB),
           "MODELMON_WEIGHTS_MAX_BYTES": str(64 * MIB)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            cwd=ROOT, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        drop_pg_database(db)


def test_the_server_s_peak_memory_stays_within_twice_idle_while_refusing_bombs(served,
                                                                               tmp_path):
    url, proc = served
    with httpx2.Client(base_url=url, timeout=120) as c:
        register(c)
        # warm every path once with small uploads, so idle includes what they import
        small = pa.table({"amount": np.arange(1000, dtype=np.float64),
                          "country": ["de", "fr"] * 500})
        pq.write_table(small, tmp_path / "small.parquet")
        assert c.post(REFERENCE, content=(tmp_path / "small.parquet").read_bytes(), headers={
            "Content-Type": "application/vnd.apache.parquet"}).status_code == 201
        assert c.post(WEIGHTS, content=npz_bomb(1), headers=OCTETS).status_code == 201
        idle = peak_rss(proc.pid)

        bombs = [  # each about 1 GiB or more once read, about 1 MB or less sent
            (WEIGHTS, npz_bomb(1024), OCTETS, "MODELMON_WEIGHTS_MAX_INFLATED_BYTES"),
            (WEIGHTS, safetensors({"w": {"dtype": "F32", "shape": [1 << 28],
                                         "data_offsets": [0, 1 << 30]}}), OCTETS,
             "MODELMON_WEIGHTS_MAX_INFLATED_BYTES"),
            (WEIGHTS, gzip_bomb(b"", 1024), GZIP_OCTETS, "MODELMON_WEIGHTS_MAX_BYTES"),
            ("/v1/predictions", gzip_bomb(b'{"records": [', 1024, fill=b" "),
             {"Content-Type": "application/json", "Content-Encoding": "gzip"},
             "MODELMON_MAX_BODY_BYTES"),
            (REFERENCE, parquet_bomb(tmp_path / "bomb.parquet", 150_000_000).read_bytes(),
             {"Content-Type": "application/vnd.apache.parquet"},
             "MODELMON_REFERENCE_MAX_ROWS"),
        ]
        for path, body, headers, setting in bombs:
            assert len(body) < 2 * MIB
            assert_413(c.post(path, content=body, headers=headers), setting)
        # a file that inflates within the limit is read in chunks, not whole
        r = c.post(WEIGHTS, content=npz_bomb(128), headers=OCTETS)
        assert r.status_code == 201, r.text
        peak = peak_rss(proc.pid)
    assert peak <= 2 * idle, f"peak {peak / MIB:.0f} MiB against {idle / MIB:.0f} MiB idle"


def test_a_csv_reference_is_typed_over_all_its_rows_not_its_first_block(registered):
    """The first pass that counts a CSV's rows reads it as text; the columns are then typed
    over the whole file, so a float first seen past the first block is still a number."""
    csv = b"amount,country\n" + b"1,DE\n" * 300_000 + b"1.5,FR\n" * 10
    r = registered.post(REFERENCE, content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 201, r.text
    assert r.json()["n_rows"] == 300_010
    assert r.json()["features"]["amount"]["n_valid"] == 300_010
