"""Weight files read tensor by tensor, in chunks (app/monitoring/weightfiles.py): every
safetensors and npz dtype against plain numpy, memory below one tensor, malformed files."""

import inspect
import json
import struct
import tracemalloc

import numpy as np
import pytest
from safetensors.numpy import save_file
from weights_testutil import DTYPES, FEATURES, assert_matches_numpy, random_tensor

from app.monitoring import (
    UNSUPPORTED_DTYPE,
    WeightFileError,
    file_feature_weights,
    read_weight_file,
)


def _bf16_bits(x32: np.ndarray) -> np.ndarray:
    """Truncate float32 to its top 16 bits: an exact bf16 value."""
    return (x32.view(np.uint32) >> 16).astype(np.uint16)


def _write_safetensors_by_hand(path, tensors):
    """tensors: name -> (dtype string, shape, raw bytes). Header + raw bytes, as specified."""
    header, offset, blobs = {"__metadata__": {"format": "test"}}, 0, []
    for name, (dt, shape, raw) in tensors.items():
        header[name] = {"dtype": dt, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_safetensors_numpy_dtypes(tmp_path):
    rng = np.random.default_rng(2)
    tensors = {f"t_{np.dtype(d).name}": random_tensor(rng, d, (13, 17)) for d in DTYPES}
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    got = dict(read_weight_file(path, chunk_elems=50))
    assert set(got) == set(tensors)
    for name, x in tensors.items():
        assert_matches_numpy(got[name], x.astype(np.float64))
        assert got[name].dtype == x.dtype.name


def test_safetensors_bf16_written_by_hand(tmp_path):
    rng = np.random.default_rng(3)
    x32 = (rng.normal(size=(64, 33)) * 5).astype(np.float32)
    x32[:, :7] = 0
    bits = _bf16_bits(x32)
    exact = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    path = tmp_path / "bf16.safetensors"
    _write_safetensors_by_hand(path, {
        "w": ("BF16", x32.shape, bits.astype("<u2").tobytes()),
        "b": ("F32", (5,), np.arange(5, dtype="<f4").tobytes()),
    })
    got = dict(read_weight_file(path, chunk_elems=100))
    assert got["w"].dtype == "bfloat16" and got["w"].shape == (64, 33)
    assert_matches_numpy(got["w"], exact)
    assert got["w"].zeros >= 64 * 7
    assert_matches_numpy(got["b"], np.arange(5.0))


def test_safetensors_fp8_and_unknown_dtype(tmp_path):
    e5m2 = np.array([0x3C, 0xBC, 0x00, 0x40], dtype=np.uint8)  # 1.0, -1.0, 0.0, 2.0
    e4m3 = np.array([0x38, 0x7E, 0xB8, 0x01], dtype=np.uint8)  # 1.0, 448, -1.0, 2**-9
    path = tmp_path / "fp8.safetensors"
    _write_safetensors_by_hand(path, {
        "a": ("F8_E5M2", (4,), e5m2.tobytes()),
        "b": ("F8_E4M3", (4,), e4m3.tobytes()),
        "c": ("C64", (1,), b"\0" * 8),
    })
    got = dict(read_weight_file(path))
    assert got["a"].l1 == 4.0 and got["a"].max_abs == 2.0 and got["a"].zeros == 1
    assert got["b"].l1 == 1 + 448 + 1 + 2**-9 and got["b"].max_abs == 448
    assert got["c"].status == UNSUPPORTED_DTYPE


def test_npz_file(tmp_path):
    rng = np.random.default_rng(4)
    tensors = {"a": random_tensor(rng, np.float16, (30, 30)),
               "b": random_tensor(rng, np.int8, (100,))}
    path = tmp_path / "w.npz"
    np.savez_compressed(path, **tensors)
    got = dict(read_weight_file(path))
    for name, x in tensors.items():
        assert_matches_numpy(got[name], x.astype(np.float64))


def test_reader_is_lazy_and_memory_stays_below_one_tensor(tmp_path):
    rng = np.random.default_rng(5)
    n = 1_000_000
    tensors = {f"layer{i}": rng.normal(size=n).astype(np.float32) for i in range(4)}
    path = tmp_path / "big.safetensors"
    save_file(tensors, str(path))
    del tensors
    it = read_weight_file(path, chunk_elems=1 << 14)
    assert inspect.isgenerator(it)
    tracemalloc.start()
    try:
        first_name, _ = next(it)
        rest = [name for name, _ in it]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [first_name, *rest] == [f"layer{i}" for i in range(4)]
    assert peak < n * 4  # less than one float32 tensor, let alone the 16 MB file


def test_bad_files_raise_weight_file_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 7)
    with pytest.raises(WeightFileError):
        list(read_weight_file(bad))
    lying = tmp_path / "lying.safetensors"
    _write_safetensors_by_hand(lying, {"a": ("F32", (10,), b"\0" * 8)})
    with pytest.raises(WeightFileError):
        list(read_weight_file(lying))
    with pytest.raises(WeightFileError):
        list(read_weight_file(tmp_path / "w.bin"))


def test_file_feature_weights_memory_stays_below_the_tensor(tmp_path):
    rng = np.random.default_rng(6)
    w = rng.normal(size=(8, 125_000)).astype(np.float32)  # 1M weights, features on axis 0
    w[3] = 0.0
    path = tmp_path / "wide.safetensors"
    save_file({"layer0/kernel": w}, str(path))
    l1 = np.abs(w.astype(np.float64)).sum(axis=1)
    del w
    tracemalloc.start()
    try:
        fw = file_feature_weights(path, "layer0/kernel", FEATURES, axis=0, chunk_elems=1 << 14)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [f.l1 for f in fw.features] == pytest.approx(l1.tolist(), rel=1e-10)
    assert fw.nonzero == 7 and fw.features[3].zero
    assert peak < 1_000_000 * 4  # less than the float32 tensor, let alone it in float64
