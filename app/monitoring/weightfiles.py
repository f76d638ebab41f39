"""Weight files (.safetensors, .npz) read tensor by tensor, in chunks, into the statistics
of app/monitoring/weights.py.

Apart from the statistics because it is the one place in monitoring/ that knows file
formats: safetensors' header and dtypes (bf16 and fp8 decoded by hand, numpy has neither),
npz members. A safetensors tensor is read in chunks, so memory stays near one chunk; an npz
member is read whole, one at a time, so memory stays near one tensor, never the whole file.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from app.monitoring.weights import (
    CHUNK_ELEMS,
    ZERO_EPS,
    FeatureWeights,
    TensorStats,
    WeightSummary,
    chunked_feature_weights,
    chunked_stats,
    feature_weights,
    supported_dtype,
    tensor_stats,
    unsupported_tensor,
    weight_summary,
)

_MAX_HEADER = 100 * 2**20


class WeightFileError(ValueError):
    """The file is not a readable .npz or .safetensors weight file."""


# --- safetensors -------------------------------------------------------------------------

def _fp8_e4m3fn_table() -> np.ndarray:
    b = np.arange(256)
    sign = np.where(b >> 7, -1.0, 1.0)
    exp = (b >> 3) & 0xF
    man = b & 0x7
    val = np.where(exp == 0, man / 8.0 * 2.0**-6, (1 + man / 8.0) * 2.0 ** (exp - 7))
    val = sign * val
    val[(exp == 0xF) & (man == 0x7)] = np.nan
    return val


_SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1),
    "U64": ("<u8", 8), "U32": ("<u4", 4), "U16": ("<u2", 2), "U8": ("u1", 1),
    "BOOL": ("?", 1), "F8_E5M2": ("u1", 1), "F8_E4M3": ("u1", 1),
}
_E4M3 = _fp8_e4m3fn_table()
_DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
}


def _decode(raw: np.ndarray, st_dtype: str) -> np.ndarray:
    """Raw chunk -> float64. bf16 is the top half of a float32; fp8 e5m2 of a float16."""
    if st_dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if st_dtype == "F8_E5M2":
        return (raw.astype(np.uint16) << 8).view(np.float16).astype(np.float64)
    if st_dtype == "F8_E4M3":
        return _E4M3[raw]
    return raw.astype(np.float64)


def _safetensors_header(f: Any, size: int) -> tuple[dict[str, Any], int]:
    head = f.read(8)
    if len(head) != 8:
        raise WeightFileError("file too short for a safetensors header")
    (length,) = struct.unpack("<Q", head)
    if length > min(size - 8, _MAX_HEADER):
        raise WeightFileError("safetensors header length out of range")
    try:
        header = json.loads(f.read(length))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightFileError(f"bad safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise WeightFileError("bad safetensors header: not an object")
    return header, 8 + length


def _entry(name: str, info: Any) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype, shape, begin, end) of a safetensors header entry."""
    try:
        st_dtype = str(info["dtype"])
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightFileError(f"bad entry for {name!r}: {exc!r}") from exc
    return st_dtype, shape, begin, end


def _read_safetensors(path: Path, eps: float, chunk_elems: int) -> Iterator[TensorStats]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header, data_start = _safetensors_header(f, size)
        entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
        try:
            entries.sort(key=lambda kv: int(kv[1]["data_offsets"][0]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise WeightFileError(f"bad tensor entry: {exc!r}") from exc
        for name, info in entries:
            st_dtype, shape, begin, end = _entry(name, info)
            count = math.prod(shape)
            if st_dtype not in _SAFETENSORS_DTYPES:
                yield unsupported_tensor(name, shape, st_dtype, count)
                continue
            chunks = _chunks(f, name, (st_dtype, shape, begin, end), data_start, size,
                             chunk_elems)
            yield chunked_stats(chunks, eps, name, shape, _DTYPE_NAMES[st_dtype])


def _chunks(f: Any, name: str, entry: tuple[str, tuple[int, ...], int, int], data_start: int,
            size: int, chunk_elems: int) -> Iterator[np.ndarray]:
    """A safetensors tensor of a supported dtype as float64 chunks, in flat (C) order."""
    st_dtype, shape, begin, end = entry
    np_dtype, itemsize = _SAFETENSORS_DTYPES[st_dtype]
    count = math.prod(shape)
    if end - begin != count * itemsize or begin < 0 or data_start + end > size:
        raise WeightFileError(f"tensor {name!r}: offsets do not match shape and dtype")
    f.seek(data_start + begin)
    for start in range(0, count, chunk_elems):
        take = min(chunk_elems, count - start)
        buf = f.read(take * itemsize)
        if len(buf) != take * itemsize:
            raise WeightFileError(f"tensor {name!r}: file truncated")
        yield _decode(np.frombuffer(buf, dtype=np_dtype), st_dtype)


def _read_npz(path: Path, eps: float, chunk_elems: int) -> Iterator[TensorStats]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightFileError(f"cannot open {path.name}: {exc}") from exc
    with archive:
        for name in archive.files:
            try:
                arr = archive[name]  # only this member is read into memory
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise WeightFileError(f"cannot read {name!r}: {exc}") from exc
            yield tensor_stats(arr, eps, name, chunk_elems=chunk_elems)
            del arr


def read_weight_file(
    path: str | os.PathLike[str], eps: float = ZERO_EPS, *, chunk_elems: int = CHUNK_ELEMS,
    fmt: str | None = None,
) -> Iterator[tuple[str, TensorStats]]:
    """Yield (name, stats) tensor by tensor from a .safetensors or .npz file.

    A generator: nothing is read until iterated, and each tensor's data is released before
    the next is read. Unknown dtypes yield a result with status 'unsupported_dtype'; a
    malformed file raises WeightFileError.
    """
    p = Path(path)
    suffix = f".{fmt}" if fmt else p.suffix.lower()
    if suffix == ".safetensors":
        reader = _read_safetensors(p, eps, chunk_elems)
    elif suffix == ".npz":
        reader = _read_npz(p, eps, chunk_elems)
    else:
        raise WeightFileError(f"unsupported weight file type {suffix!r} (.safetensors, .npz)")
    for stats in reader:
        yield stats.name, stats


def summarise_weight_file(
    path: str | os.PathLike[str], eps: float = ZERO_EPS, *, chunk_elems: int = CHUNK_ELEMS,
    fmt: str | None = None,
) -> WeightSummary:
    """read_weight_file + weight_summary; ``fmt`` ("npz" or "safetensors") overrides the
    file's suffix, for uploads stored under a temporary name."""
    return weight_summary(read_weight_file(path, eps, chunk_elems=chunk_elems, fmt=fmt))


def file_feature_weights(path: str | os.PathLike[str], tensor: str,
                         features: list[str] | tuple[str, ...], axis: int,
                         eps: float = ZERO_EPS, *, fmt: str | None = None,
                         chunk_elems: int = CHUNK_ELEMS) -> FeatureWeights:
    """feature_weights of one tensor of a .npz or .safetensors file; a safetensors tensor is
    read in chunks, so memory stays near one chunk whatever its size. WeightFileError for a
    missing or unreadable tensor, ValueError for a wrong axis or length."""
    p = Path(path)
    suffix = f".{fmt}" if fmt else p.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as archive:
                if tensor not in archive.files:
                    raise WeightFileError(f"no tensor {tensor!r} in the file")
                values = archive[tensor]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise WeightFileError(f"cannot read {tensor!r}: {exc}") from exc
        if not supported_dtype(values.dtype):
            raise WeightFileError(f"tensor {tensor!r}: dtype {values.dtype} is not supported")
        return feature_weights(values, features, axis, eps, tensor, chunk_elems=chunk_elems)
    if suffix != ".safetensors":
        raise WeightFileError(f"unsupported weight file type {suffix!r} (.safetensors, .npz)")
    size = os.path.getsize(p)
    with open(p, "rb") as f:
        header, data_start = _safetensors_header(f, size)
        if tensor == "__metadata__" or tensor not in header:
            raise WeightFileError(f"no tensor {tensor!r} in the file")
        entry = _entry(tensor, header[tensor])
        if entry[0] not in _SAFETENSORS_DTYPES:
            raise WeightFileError(f"tensor {tensor!r}: dtype {entry[0]} is not supported")
        return chunked_feature_weights(
            _chunks(f, tensor, entry, data_start, size, chunk_elems), entry[1], features,
            axis, eps, tensor)
