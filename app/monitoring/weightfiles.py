"""Weight files (.safetensors, .npz) read tensor by tensor, in chunks, into the statistics
of app/monitoring/weights.py.

Apart from the statistics because it is the one place in monitoring/ that knows file
formats: safetensors' header and dtypes (bf16 and fp8 decoded by hand, numpy has neither),
npz members and their npy headers. Every tensor is read in chunks (an npz member is
decompressed as it is read), so memory stays near one chunk whatever the tensor.

What a file becomes is checked on its headers before any tensor data is read
(``WeightLimits``): the bytes its tensors hold once decompressed (an npz's members as its zip
headers declare them, a safetensors file's tensors as their dtypes and shapes declare them),
and the bytes of the metadata parsed into memory (a safetensors header, an npz's zip index);
past either, ``WeightFileTooLarge`` names the limit and the member.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    unsupported_tensor,
    weight_summary,
)

_MAX_HEADER = 100 * 2**20


class WeightFileError(ValueError):
    """The file is not a readable .npz or .safetensors weight file."""


@dataclass(frozen=True)
class WeightLimits:
    """What reading a file may take, checked on its headers before any tensor is read:
    ``tensor_bytes``, the bytes of all its tensors once decompressed; ``index_bytes``, the
    bytes of the metadata parsed into memory (a safetensors header, an npz's zip index).
    None: no limit."""

    tensor_bytes: int | None = None
    index_bytes: int | None = None


NO_LIMITS = WeightLimits()


class WeightFileTooLarge(ValueError):
    """The file would become more than a limit allows: ``limit`` is "tensor_bytes" or
    "index_bytes" (the WeightLimits field), ``value`` its value, ``field`` the member (or
    header) that passes it."""

    def __init__(self, message: str, limit: str, value: int, field: str) -> None:
        super().__init__(message)
        self.limit, self.value, self.field = limit, value, field


def _check_tensor_bytes(declared: list[tuple[str, int]], limits: WeightLimits) -> None:
    """``declared``: (tensor, bytes it holds once read) for every tensor of a file."""
    limit = limits.tensor_bytes
    total = sum(n for _, n in declared)
    if limit is not None and total > limit:
        name, largest = max(declared, key=lambda d: d[1])
        raise WeightFileTooLarge(
            f"the file's tensors hold {total} bytes once decompressed, past the limit of "
            f"{limit} (the largest, {name[:200]!r}, {largest} bytes)", "tensor_bytes", limit,
            name[:200])


def _check_index_bytes(n: int, what: str, limits: WeightLimits) -> None:
    limit = limits.index_bytes
    if limit is not None and n > limit:
        raise WeightFileTooLarge(f"the {what} is {n} bytes, past the limit of {limit}",
                                 "index_bytes", limit, what)


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


def _safetensors_header(f: Any, size: int, limits: WeightLimits
                        ) -> tuple[dict[str, Any], int]:
    """The header and where the data starts; the header's length is held to the limits
    before it is read, and its tensors' declared bytes after it is parsed."""
    head = f.read(8)
    if len(head) != 8:
        raise WeightFileError("file too short for a safetensors header")
    (length,) = struct.unpack("<Q", head)
    if length > min(size - 8, _MAX_HEADER):
        raise WeightFileError("safetensors header length out of range")
    _check_index_bytes(length, "safetensors header", limits)
    try:
        header = json.loads(f.read(length))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightFileError(f"bad safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise WeightFileError("bad safetensors header: not an object")
    _check_tensor_bytes([(name, _declared_bytes(name, info)) for name, info in header.items()
                         if name != "__metadata__"], limits)
    return header, 8 + length


def _declared_bytes(name: str, info: Any) -> int:
    """What a safetensors tensor holds, as its dtype and shape declare it (its offsets for a
    dtype that is not read)."""
    st_dtype, shape, begin, end = _entry(name, info)
    if st_dtype in _SAFETENSORS_DTYPES:
        return math.prod(shape) * _SAFETENSORS_DTYPES[st_dtype][1]
    return max(end - begin, 0)


def _entry(name: str, info: Any) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype, shape, begin, end) of a safetensors header entry."""
    try:
        st_dtype = str(info["dtype"])
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightFileError(f"bad entry for {name!r}: {exc!r}") from exc
    return st_dtype, shape, begin, end


def _read_safetensors(path: Path, eps: float, chunk_elems: int, limits: WeightLimits
                      ) -> Iterator[TensorStats]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header, data_start = _safetensors_header(f, size, limits)
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


# --- npz ---------------------------------------------------------------------------------

_ZIP_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


@contextmanager
def _npz(path: Path, limits: WeightLimits) -> Iterator[zipfile.ZipFile]:
    """The archive, once its zip index (read into memory by zipfile) and its members'
    declared uncompressed sizes are within the limits."""
    try:
        with open(path, "rb") as f:
            end = zipfile._EndRecData(f)  # the end record: the index's size, before reading it
        if end is None:
            raise zipfile.BadZipFile("not a zip file")
        _check_index_bytes(end[zipfile._ECD_SIZE], "zip index", limits)
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise WeightFileError(f"cannot open {path.name}: {exc}") from exc
    with archive:
        _check_tensor_bytes([(_member_name(i), i.file_size) for i in archive.infolist()],
                            limits)
        yield archive


def _member_name(info: zipfile.ZipInfo) -> str:
    return info.filename[:-4] if info.filename.endswith(".npy") else info.filename


def _npy_header(f: Any, name: str, size: int) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of an npy member, its data checked to fit the member's
    declared size before any of it is read."""
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"npy format version {version} is not supported")
        shape, fortran, dtype = read(f)
    except _ZIP_ERRORS as exc:
        raise WeightFileError(f"cannot read {name!r}: {exc}") from exc
    if dtype.hasobject:
        raise WeightFileError(f"cannot read {name!r}: object arrays are not weights")
    if math.prod(shape) * dtype.itemsize > size:
        raise WeightFileError(f"tensor {name!r}: its npy header declares {list(shape)} "
                              f"{dtype}, more than the member holds")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _npy_chunks(f: Any, name: str, shape: tuple[int, ...], dtype: np.dtype,
                chunk_elems: int) -> Iterator[np.ndarray]:
    """An npy member's data as float64 chunks, in its stored order, decompressed as read."""
    count = math.prod(shape)
    for start in range(0, count, chunk_elems):
        take = min(chunk_elems, count - start) * dtype.itemsize
        try:
            buf = f.read(take)
        except _ZIP_ERRORS as exc:
            raise WeightFileError(f"cannot read {name!r}: {exc}") from exc
        if len(buf) != take:
            raise WeightFileError(f"tensor {name!r}: member truncated")
        yield np.frombuffer(buf, dtype=dtype).astype(np.float64)


def _read_npz(path: Path, eps: float, chunk_elems: int, limits: WeightLimits
              ) -> Iterator[TensorStats]:
    with _npz(path, limits) as archive:
        for info in archive.infolist():
            name = _member_name(info)
            if name == info.filename:  # not an array: listed, never read
                yield unsupported_tensor(name, (), "bytes", 1)
                continue
            with archive.open(info) as f:
                shape, _, dtype = _npy_header(f, name, info.file_size)
                if not supported_dtype(dtype):
                    yield unsupported_tensor(name, shape, str(dtype), math.prod(shape))
                    continue
                yield chunked_stats(_npy_chunks(f, name, shape, dtype, chunk_elems), eps,
                                    name, shape, str(dtype))


def read_weight_file(
    path: str | os.PathLike[str], eps: float = ZERO_EPS, *, chunk_elems: int = CHUNK_ELEMS,
    fmt: str | None = None, limits: WeightLimits = NO_LIMITS,
) -> Iterator[tuple[str, TensorStats]]:
    """Yield (name, stats) tensor by tensor from a .safetensors or .npz file.

    A generator: nothing is read until iterated, and each tensor's data is released before
    the next is read. Unknown dtypes yield a result with status 'unsupported_dtype'; a
    malformed file raises WeightFileError, one past ``limits`` WeightFileTooLarge (before
    any tensor is read).
    """
    p = Path(path)
    suffix = f".{fmt}" if fmt else p.suffix.lower()
    if suffix == ".safetensors":
        reader = _read_safetensors(p, eps, chunk_elems, limits)
    elif suffix == ".npz":
        reader = _read_npz(p, eps, chunk_elems, limits)
    else:
        raise WeightFileError(f"unsupported weight file type {suffix!r} (.safetensors, .npz)")
    for stats in reader:
        yield stats.name, stats


def summarise_weight_file(
    path: str | os.PathLike[str], eps: float = ZERO_EPS, *, chunk_elems: int = CHUNK_ELEMS,
    fmt: str | None = None, limits: WeightLimits = NO_LIMITS,
) -> WeightSummary:
    """read_weight_file + weight_summary; ``fmt`` ("npz" or "safetensors") overrides the
    file's suffix, for uploads stored under a temporary name."""
    return weight_summary(read_weight_file(path, eps, chunk_elems=chunk_elems, fmt=fmt,
                                           limits=limits))


def file_feature_weights(path: str | os.PathLike[str], tensor: str,
                         features: list[str] | tuple[str, ...], axis: int,
                         eps: float = ZERO_EPS, *, fmt: str | None = None,
                         chunk_elems: int = CHUNK_ELEMS,
                         limits: WeightLimits = NO_LIMITS) -> FeatureWeights:
    """feature_weights of one tensor of a .npz or .safetensors file, read in chunks, so memory
    stays near one chunk whatever its size (a Fortran-ordered npy tensor is read whole).
    WeightFileError for a missing or unreadable tensor, ValueError for a wrong axis or
    length, WeightFileTooLarge past ``limits``."""
    p = Path(path)
    suffix = f".{fmt}" if fmt else p.suffix.lower()
    if suffix == ".npz":
        return _npz_feature_weights(p, tensor, features, axis, eps, chunk_elems, limits)
    if suffix != ".safetensors":
        raise WeightFileError(f"unsupported weight file type {suffix!r} (.safetensors, .npz)")
    size = os.path.getsize(p)
    with open(p, "rb") as f:
        header, data_start = _safetensors_header(f, size, limits)
        if tensor == "__metadata__" or tensor not in header:
            raise WeightFileError(f"no tensor {tensor!r} in the file")
        entry = _entry(tensor, header[tensor])
        if entry[0] not in _SAFETENSORS_DTYPES:
            raise WeightFileError(f"tensor {tensor!r}: dtype {entry[0]} is not supported")
        return chunked_feature_weights(
            _chunks(f, tensor, entry, data_start, size, chunk_elems), entry[1], features,
            axis, eps, tensor)


def _npz_feature_weights(path: Path, tensor: str, features: list[str] | tuple[str, ...],
                         axis: int, eps: float, chunk_elems: int, limits: WeightLimits
                         ) -> FeatureWeights:
    with _npz(path, limits) as archive:
        info = next((i for i in archive.infolist()
                     if _member_name(i) == tensor and i.filename != tensor), None)
        if info is None:
            raise WeightFileError(f"no tensor {tensor!r} in the file")
        with archive.open(info) as f:
            shape, fortran, dtype = _npy_header(f, tensor, info.file_size)
            if not supported_dtype(dtype):
                raise WeightFileError(f"tensor {tensor!r}: dtype {dtype} is not supported")
            chunks = _npy_chunks(f, tensor, shape, dtype, chunk_elems)
            if fortran:
                values = np.concatenate([np.empty(0), *chunks]).reshape(shape, order="F")
                return feature_weights(values, features, axis, eps, tensor,
                                       chunk_elems=chunk_elems)
            return chunked_feature_weights(chunks, shape, features, axis, eps, tensor)
