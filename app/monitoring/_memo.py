"""A bounded, thread-safe memo for pure functions whose arguments include arrays: the key is
the arrays' bytes (a digest) and the other arguments, so a hit is the same computation's
result and can never be stale. For results that are immutable (frozen dataclasses, floats)
or copied out (arrays).

A memo given a ``Shared`` codec also reads and writes a second level that outlives the
process, when the caller has opened one with ``sharing`` (the service and the scheduler run
in different processes, and each would otherwise compute the same costly figure of the same
window once). This module does no I/O itself: the store is whatever the caller passes (the
application's is a database table, app/storage/memo.py). Its keys are digests of a canonical
encoding of the same key and of the codec's namespace, which names the library version the
figure depends on, so a stored figure is as content-addressed as a local one.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

T = TypeVar("T")


def digest(a: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """An array's content key: dtype, shape and a 128-bit digest of its bytes."""
    c = np.ascontiguousarray(a)
    return c.dtype.str, c.shape, hashlib.blake2b(c.tobytes(), digest_size=16).digest()


_OWNED: dict[int, tuple[weakref.ref, Any]] = {}
_OWNED_LOCK = threading.Lock()


def digest_of(owner: Any, a: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """``digest(a)`` for an array an immutable ``owner`` holds, computed once per owner (a
    compiled profile's reference sample is hashed once, not once per window)."""
    with _OWNED_LOCK:
        hit = _OWNED.get(id(owner))
    if hit is not None and hit[0]() is owner:
        return hit[1]
    key = digest(a)
    with _OWNED_LOCK:
        if len(_OWNED) > 65_536:
            _OWNED.clear()
        _OWNED[id(owner)] = (weakref.ref(owner), key)
    return key


class SharedStore(Protocol):
    """A second-level memo shared between processes: text values by 32-byte key."""

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, str]:
        """The values held for those of ``keys`` the store has."""
        ...

    def put(self, key: bytes, value: str) -> None: ...


_SHARED: ContextVar[SharedStore | None] = ContextVar("modelmon_shared_memo", default=None)


@contextmanager
def sharing(store: SharedStore) -> Iterator[SharedStore]:
    """Within this block (this thread or task), memos with a codec also use ``store``."""
    token = _SHARED.set(store)
    try:
        yield store
    finally:
        _SHARED.reset(token)


def _canonical(x: Any) -> Any:
    """A key's parts as types whose repr is the same in every process (floats as their exact
    hex, numpy scalars as Python's); anything else is refused rather than guessed."""
    if isinstance(x, tuple | list):
        return tuple(_canonical(v) for v in x)
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x).hex()
    if isinstance(x, str | bytes) or x is None:
        return x
    raise TypeError(f"memo key part of type {type(x).__name__} has no canonical form")


def stable_key(namespace: str, key: Hashable) -> bytes:
    """The key of ``key`` in a shared store: 32 bytes of a digest of its canonical repr."""
    raw = repr((namespace, _canonical(key))).encode()
    return hashlib.blake2b(raw, digest_size=32).digest()


@dataclass(frozen=True)
class Shared:
    """How a memo's values go to and come from a shared store, under ``namespace``."""

    namespace: str
    encode: Callable[[Any], str]
    decode: Callable[[str], Any]


class Memo:
    """The last ``size`` results, by key; with ``shared``, also the store of ``sharing``."""

    def __init__(self, size: int, shared: Shared | None = None) -> None:
        self.size = size
        self.shared = shared
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.shared_hits = 0  # of the misses, how many the shared store answered

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        return self.get_many([key], lambda _missing: [compute()])[0]

    def get_many(self, keys: Sequence[Hashable],
                 compute: Callable[[list[Hashable]], list[T]]) -> list[T]:
        """The value of each key, as ``get`` would give it; the keys neither level holds
        (each once, in order of first appearance) are computed together by one call of
        ``compute``, which returns their values in that order (so the caller can compute
        them in parallel)."""
        out: dict[Hashable, Any] = {}
        with self._lock:
            for key in keys:
                if key in self._items and key not in out:
                    self._items.move_to_end(key)
                    out[key] = self._items[key]
            self.hits += sum(1 for key in keys if key in out)
        missing = list(dict.fromkeys(key for key in keys if key not in out))
        store = _SHARED.get() if self.shared is not None else None
        skeys: dict[Hashable, bytes] = {}
        if store is not None and missing:
            assert self.shared is not None
            skeys = {key: stable_key(self.shared.namespace, key) for key in missing}
            held = store.get_many(list(skeys.values()))  # one read for all
            for key in missing:
                raw = held.get(skeys[key])
                if raw is not None:
                    self.shared_hits += 1
                    out[key] = self.shared.decode(raw)
        todo = [key for key in missing if key not in out]
        values = compute(todo) if todo else []
        if len(values) != len(todo):
            raise ValueError(f"compute returned {len(values)} values for {len(todo)} keys")
        for key, value in zip(todo, values, strict=True):
            out[key] = value
            if store is not None:
                assert self.shared is not None
                store.put(skeys[key], self.shared.encode(value))
        with self._lock:
            self.misses += len(missing)
            for key in missing:
                self._items[key] = out[key]
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return [out[key] for key in keys]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = self.shared_hits = 0
