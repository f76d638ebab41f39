"""Summaries as bytes: the packed form every bucket summary is stored, and sent, in.

A payload is a format byte, then (zlib-compressed for "Z") a little-endian uint32 header
length, a JSON header ``{"v": FORMAT, "meta": {...}, "arrays": [[name, dtype, shape], ...]}``
and the raw arrays in that order. "R", the uncompressed form earlier releases wrote for the
rows of an open bucket, is still read, as is a header without "v" (format 1). Drift counts
are stored sparse (gaps between non-zero slots and their values, each in the smallest
unsigned type) or dense, whichever is smaller. A summary produced by any path decodes and
merges identically. docs/summaries.md documents the format field by field.

``unpack`` trusts its input (the service's own rows); ``unpack_untrusted`` reads a payload
sent by a client within bounds, refusing anything else with ``PayloadError``.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

from app.evaluation import cbpe
from app.evaluation.summaries import DriftSummary, OutcomeSummary
from app.monitoring import CalibrationSums, CohortSums
from app.monitoring.calibration import N_FINE_SLOTS
from app.monitoring.cbpe import NO_CONFUSION

# The version of the packed form this release writes and the newest it reads. Arrays added
# within a version are optional (each cohort key's c<i>_s and c<i>_o, its sum of scores and
# count of positives; an outcome's confusion counts): a reader without them ignores them, and
# a summary without them reads as not knowing those sums, so releases on either side of the
# addition share payloads.
FORMAT = 1
# The array types a payload may hold (all little-endian or byte-sized, none an object).
DTYPES = frozenset({"|u1", "<u2", "<u4", "<u8", "<i4", "<i8", "<f8"})


class PayloadError(ValueError):
    """A payload that is not a well-formed summary of this format."""


def pack(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """A small self-describing container: a format byte, a JSON header, the raw arrays,
    zlib-compressed ("Z"). ``unpack`` also reads "R", the uncompressed form earlier releases
    wrote for the rows of an open bucket."""
    header = {"v": FORMAT, "meta": meta, "arrays": [[k, a.dtype.str, list(a.shape)]
                                                    for k, a in arrays.items()]}
    h = json.dumps(header, separators=(",", ":")).encode()
    body = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    raw = struct.pack("<I", len(h)) + h + body
    return b"Z" + zlib.compress(raw, 1)


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if data[:1] not in (b"Z", b"R"):
        raise ValueError("not a summary payload")
    raw = zlib.decompress(data[1:]) if data[:1] == b"Z" else data[1:]
    (hlen,) = struct.unpack_from("<I", raw)
    header = json.loads(raw[4:4 + hlen])
    arrays: dict[str, np.ndarray] = {}
    pos = 4 + hlen
    for name, dtype, shape in header["arrays"]:
        dt = np.dtype(dtype)
        count = math.prod(shape)  # 1 for a scalar's empty shape
        arrays[name] = np.frombuffer(raw, dtype=dt, count=count, offset=pos).reshape(shape)
        pos += count * dt.itemsize
    return header["meta"], arrays


def _inflate(data: bytes, max_bytes: int) -> bytes:
    if data[:1] == b"R":
        raw = data[1:]
    elif data[:1] == b"Z":
        d = zlib.decompressobj()
        try:
            raw = d.decompress(data[1:], max_bytes + 1)
        except zlib.error:
            raise PayloadError("the payload's compressed data is corrupt") from None
        if len(raw) > max_bytes:
            raise PayloadError(f"the payload inflates past {max_bytes} bytes")
        if not d.eof or d.unused_data:
            raise PayloadError("the payload's compressed data is truncated or has trailing "
                               "bytes")
    else:
        raise PayloadError("not a summary payload (its first byte must be 'Z' or 'R')")
    if len(raw) > max_bytes:
        raise PayloadError(f"the payload is larger than {max_bytes} bytes")
    return raw


def _header(raw: bytes) -> tuple[dict[str, Any], list[tuple[str, np.dtype, tuple[int, ...]]],
                                 int]:
    if len(raw) < 4:
        raise PayloadError("the payload is too short to hold a header")
    (hlen,) = struct.unpack_from("<I", raw)
    try:
        header = json.loads(raw[4:4 + hlen])
        version = header.get("v", 1)
        meta, specs = header["meta"], header["arrays"]
        if not isinstance(meta, dict) or not isinstance(specs, list):
            raise TypeError
        out = []
        for name, dtype, shape in specs:
            if not isinstance(name, str) or dtype not in DTYPES or not isinstance(shape, list) \
                    or not all(type(d) is int and d >= 0 for d in shape):
                raise TypeError
            out.append((name, np.dtype(dtype), tuple(shape)))
    except (ValueError, TypeError, KeyError, AttributeError):
        raise PayloadError("the payload's header is not a summary header") from None
    if version != FORMAT:
        raise PayloadError(f"the payload is of format {version!r}; this service reads "
                           f"format {FORMAT}")
    return meta, out, 4 + hlen


def unpack_untrusted(data: bytes, max_bytes: int
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``unpack`` of a payload a client sent: at most ``max_bytes`` once inflated (checked
    while inflating, before the memory is spent), known array types only, and arrays that
    exactly fill the payload."""
    raw = _inflate(data, max_bytes)
    meta, specs, pos = _header(raw)
    arrays: dict[str, np.ndarray] = {}
    for name, dt, shape in specs:
        count = math.prod(shape)
        if count * dt.itemsize > len(raw) - pos or name in arrays:
            raise PayloadError(f"array {name!r} does not fit the payload")
        arrays[name] = np.frombuffer(raw, dtype=dt, count=count, offset=pos).reshape(shape)
        pos += count * dt.itemsize
    if pos != len(raw):
        raise PayloadError("the payload holds bytes after its last array")
    return meta, arrays


def _smallest_uint(x: np.ndarray) -> np.ndarray:
    top = int(x.max()) if x.size else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return x.astype(dt)
    return x.astype(np.uint64)


def _counts_arrays(size: int, idx: np.ndarray, val: np.ndarray) -> dict[str, np.ndarray]:
    """Non-zero counts as gaps between their slots and values, each in the smallest unsigned
    type (about 3 bytes a count); dense when more than half the slots are non-zero."""
    if idx.size * 2 < size:
        return {"gap": _smallest_uint(np.diff(idx, prepend=0)), "val": _smallest_uint(val)}
    dense = np.zeros(size, dtype=np.int64)
    dense[idx] = val
    return {"dense": _smallest_uint(dense)}


def _dense(arrays: dict[str, np.ndarray], size: int) -> np.ndarray:
    if "dense" in arrays:
        return arrays["dense"].astype(np.int64)
    out = np.zeros(size, dtype=np.int64)
    out[np.cumsum(arrays["gap"], dtype=np.int64)] = arrays["val"]
    return out


def pack_drift(s: DriftSummary) -> bytes:
    nz = np.flatnonzero(s.counts)
    size = int(s.counts.shape[0])
    return pack({"n": s.n, "size": size},
                {**_counts_arrays(size, nz, s.counts[nz]), **cbpe.arrays(s.cbpe)})


def pack_drift_counts(n: int, size: int, idx: np.ndarray, val: np.ndarray,
                      cbpe_sums: cbpe.CbpeSums | None = None) -> bytes:
    """``pack_drift`` of counts held as (non-zero index, count). Compressed here although
    the row lives only until its bucket is compacted: a 1,000-row batch's counts are tens of
    kilobytes, which the database would otherwise compress and chunk out of line itself, at
    more cost to the ingest transaction than zlib's fastest level costs here (measured:
    BENCHMARKS.md, ingest)."""
    return pack({"n": n, "size": size},
                {**_counts_arrays(size, idx, val), **cbpe.arrays(cbpe_sums)})


def unpack_drift(data: bytes, key: str) -> DriftSummary:
    return drift_of(*unpack(data), key)


def add_drift_into(total: DriftSummary, data: bytes) -> None:
    """``add_drift`` of a packed drift summary into ``total``, its CBPE sums with it (unknown
    once a part does not hold them)."""
    meta, arrays = unpack(data)
    counts = total.counts
    if int(meta["size"]) != counts.shape[0]:
        raise ValueError("drift summaries of different layouts do not add up")
    if "dense" in arrays:  # added where they are, without a dense copy of each
        np.add(counts, arrays["dense"], out=counts, casting="unsafe")
    else:
        counts[np.cumsum(arrays["gap"], dtype=np.int64)] += arrays["val"].astype(np.int64)
    total.n += int(meta["n"])
    total.cbpe = cbpe.added(total.cbpe, cbpe.from_arrays(arrays))


def drift_of(meta: dict[str, Any], arrays: dict[str, np.ndarray], key: str) -> DriftSummary:
    return DriftSummary(key, int(meta["n"]), _dense(arrays, int(meta["size"])),
                        cbpe.from_arrays(arrays))


def pack_outcome(s: OutcomeSummary) -> bytes:
    meta: dict[str, Any] = {"n": s.n, "labeled": s.labeled, "cohorts": {},
                            "errors": s.errors, "squares": s.squares}
    arrays: dict[str, np.ndarray] = {}
    c = s.calibration
    if c is not None:
        nz = np.flatnonzero(c.count)
        meta["brier"] = c.brier
        arrays.update(cal_idx=nz.astype(np.int32), cal_count=c.count[nz].astype(np.int64),
                      cal_conf=c.confidence[nz], cal_outcome=c.outcome[nz],
                      label_counts=c.label_counts.astype(np.int64))
    if s.confusion is not None and s.confusion.size:
        arrays["confusion"] = s.confusion.astype(np.int64)
    for i, (key, sums) in enumerate(s.cohorts.items()):
        meta["cohorts"][key] = list(sums.cohorts)
        arrays[f"c{i}_n"] = sums.n.astype(np.int64)
        arrays[f"c{i}_a"] = sums.first.astype(np.float64)
        arrays[f"c{i}_b"] = sums.second.astype(np.float64)
        if sums.scores is not None and sums.positives is not None:
            arrays[f"c{i}_s"] = sums.scores.astype(np.float64)
            arrays[f"c{i}_o"] = sums.positives.astype(np.float64)
    if s.delays is not None:
        arrays["delays"] = np.frombuffer(s.delays.serialize(), dtype=np.uint8)
    return pack(meta, arrays)


def unpack_outcome(data: bytes) -> OutcomeSummary:
    return outcome_of(*unpack(data))


def outcome_of(meta: dict[str, Any], a: dict[str, np.ndarray]) -> OutcomeSummary:
    out = OutcomeSummary(n=int(meta["n"]), labeled=int(meta["labeled"]))
    if "cal_idx" in a:
        idx = a["cal_idx"]
        count = np.zeros(N_FINE_SLOTS, dtype=np.int64)
        conf = np.zeros(N_FINE_SLOTS)
        outcome = np.zeros(N_FINE_SLOTS)
        count[idx], conf[idx], outcome[idx] = a["cal_count"], a["cal_conf"], a["cal_outcome"]
        out.calibration = CalibrationSums(count, conf, outcome, float(meta["brier"]),
                                          a["label_counts"].astype(np.int64))
    # a classifier's labeled pairs (calibration sums) summarised before the confusion counts
    # were kept: not known; no labeled pair of a classifier, or a regression: none counted
    out.confusion = (a["confusion"].astype(np.int64) if "confusion" in a
                     else None if "cal_idx" in a else NO_CONFUSION)
    for i, (key, names) in enumerate(meta["cohorts"].items()):
        known = f"c{i}_s" in a and f"c{i}_o" in a  # kept since observed / expected
        out.cohorts[key] = CohortSums(tuple(names), a[f"c{i}_n"].astype(np.int64),
                                      a[f"c{i}_a"].copy(), a[f"c{i}_b"].copy(),
                                      a[f"c{i}_s"].copy() if known else None,
                                      a[f"c{i}_o"].copy() if known else None)
    if "delays" in a:
        out.delays = kll_doubles_sketch.deserialize(a["delays"].tobytes())
    if "errors" in meta:
        out.errors, out.squares = meta["errors"], meta["squares"]
    else:  # written before the overall sums were kept: every labeled pair is in exactly one
        # cohort of any key (a missing value is its own cohort, a capped one in '(other)'),
        # so one key's totals are exact; without a key only an unlabeled summary is known
        first = next(iter(out.cohorts.values()), None)
        if first is not None:
            out.errors, out.squares = float(first.first.sum()), float(first.second.sum())
        elif out.labeled:
            out.errors = out.squares = None
    return out
