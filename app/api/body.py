"""Reading request bodies safely: size limits before parsing, gzip limited after
decompression too; the JSON value rules they are parsed with are app/jsonvalues.py.
"""

from __future__ import annotations

import asyncio
import tempfile
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.errors import ApiError, Problem
from app.jsonvalues import parse_json
from app.settings import variable

# Bytes of decompressed body handed on at a time: the memory one gzip chunk can become,
# however well it compresses (deflate inflates up to about 1,000 times).
GZIP_PIECE_BYTES = 1024 * 1024


def _too_large(limit: int, what: str, setting: str) -> ApiError:
    return ApiError(
        413, "payload_too_large",
        f"request body exceeds {limit} bytes {what} ({variable(setting)}); split the batch "
        "into smaller requests",
        [Problem(f"limit is {variable(setting)}={limit} bytes {what}", field="body")],
    )


# A body must say what it is: one without a Content-Type is refused rather than read as JSON,
# since a browser sends one cross-site (without asking the service first) only as text/plain,
# a form or nothing at all, none of which any route accepts.
JSON_TYPES = ("application/json",)


def content_type(request: Request) -> str:
    """The body's media type, lower case, without parameters; a structured ``+json`` type
    (``application/problem+json``) is ``application/json``."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return JSON_TYPES[0] if ctype.endswith("+json") else ctype


def _check_type(request: Request, accepted: tuple[str, ...], hint: str) -> None:
    ctype = content_type(request)
    if ctype not in accepted:
        raise ApiError(
            415, "unsupported_media_type", f"send the body as {hint}, with its Content-Type",
            [Problem(f"content-type {ctype[:100]!r} is not supported" if ctype
                     else "no content-type header", field="content-type")],
        )


async def _arriving(request: Request) -> AsyncIterator[bytes]:
    """The raw body chunks, each within MODELMON_BODY_READ_TIMEOUT_SECONDS of the last: a
    client that stops sending (or trickles) gets a 408 and gives its connection back."""
    timeout = request.app.state.settings.body_read_timeout_seconds
    stream = getattr(request.state, "body_stream", None)
    if stream is None:  # one stream per request: draining continues where reading stopped
        stream = request.state.body_stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ApiError(408, "request_timeout",
                           f"the request body stopped arriving for {timeout:g} s; send it "
                           "again, whole", [Problem("body read timed out", field="body")],
                           headers={"Connection": "close"}) from None
        yield chunk


DRAIN_MAX_BYTES = 16 * 1024 * 1024


async def _drain(request: Request) -> None:
    """Read and drop what the client is still sending (at most DRAIN_MAX_BYTES, each chunk
    within the read timeout) before refusing it: a client that writes its whole body before
    reading the answer then reads the 413 instead of a connection reset."""
    dropped = 0
    try:
        async for chunk in _arriving(request):
            dropped += len(chunk)
            if dropped > DRAIN_MAX_BYTES:
                return
    except ApiError:  # stalled while draining: refuse with what was found first
        return


async def body_chunks(request: Request, setting: str) -> AsyncIterator[bytes]:
    """The body's (decompressed) bytes as they arrive; 413 naming ``setting`` (the Settings
    field of the limit) as soon as the body or its decompressed form passes it, checked on
    Content-Length before reading anything. A gzip body is decompressed as it arrives, at
    most GZIP_PIECE_BYTES at a time, and refused as soon as the running total passes the
    limit, so a small body that inflates enormously costs one piece of memory."""
    limit: int = getattr(request.app.state.settings, setting)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise ApiError(
            415, "unsupported_media_type", "content-encoding must be gzip or identity",
            [Problem(f"content-encoding {encoding[:50]!r} is not supported",
                     field="content-encoding")],
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_n = int(declared)
        except ValueError:
            raise ApiError(400, "invalid_request", "content-length is not a number",
                           [Problem("not an integer", field="content-length")]) from None
        if declared_n > limit:
            await _drain(request)
            raise _too_large(limit, "(content-length)", setting)
    gz = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    received = 0
    out_size = 0
    async for chunk in _arriving(request):
        received += len(chunk)
        if received > limit:
            await _drain(request)
            raise _too_large(limit, "(received)", setting)
        if gz is None:
            yield chunk
            continue
        data = chunk
        while data and not gz.eof:
            try:
                piece = gz.decompress(data, min(limit - out_size + 1, GZIP_PIECE_BYTES))
            except zlib.error:
                raise ApiError(400, "invalid_gzip", "body is not valid gzip",
                               [Problem("corrupt gzip stream", field="body")]) from None
            out_size += len(piece)
            if out_size > limit:
                await _drain(request)
                raise _too_large(limit, "after gzip decompression", setting)
            yield piece
            data = gz.unconsumed_tail
    if gz is not None and not gz.eof:
        raise ApiError(400, "invalid_gzip", "gzip body is truncated",
                       [Problem("gzip stream ended early", field="body")])


async def read_body(request: Request, setting: str = "max_body_bytes") -> bytes:
    """A JSON body, whole, within the limit ``setting`` (also after gzip decompression)."""
    _check_type(request, JSON_TYPES, "application/json")
    return b"".join([chunk async for chunk in body_chunks(request, setting)])


class UploadSlots:
    """At most ``n`` uploads of one process are written to temporary files at once; past it
    the next is refused (429) instead of taking another file descriptor and disk. Touched
    only from the event loop, so a plain counter is enough."""

    def __init__(self, n: int, retry_after: int) -> None:
        self._free = n
        self._retry_after = retry_after

    def take(self) -> None:
        if self._free <= 0:
            raise ApiError(429, "too_many_uploads",
                           "too many uploads are being received at once; retry later",
                           [Problem("concurrent uploads at their limit", field="body")],
                           headers={"Retry-After": str(self._retry_after)})
        self._free -= 1

    def give_back(self) -> None:
        self._free += 1


@asynccontextmanager
async def upload_file(request: Request, setting: str, accepted: tuple[str, ...], hint: str,
                      slots: UploadSlots) -> AsyncIterator[Path]:
    """A large upload streamed to a temporary file, without holding it in memory. The file
    (and an upload slot) is taken only once the body's first bytes have arrived, so clients
    that announce a body and send nothing hold a socket and no file."""
    _check_type(request, accepted, hint)
    tmp: Any = None
    try:
        async for chunk in body_chunks(request, setting):
            if tmp is None:
                try:
                    slots.take()
                except ApiError:
                    await _drain(request)
                    raise
                tmp = tempfile.NamedTemporaryFile(prefix="modelmon-upload-")
            await run_in_threadpool(tmp.write, chunk)
        if tmp is None:  # an empty body: nothing to hold open while waiting
            slots.take()
            tmp = tempfile.NamedTemporaryFile(prefix="modelmon-upload-")
        tmp.flush()
        yield Path(tmp.name)
    finally:
        if tmp is not None:
            tmp.close()
            slots.give_back()


async def read_json(request: Request, setting: str = "max_body_bytes") -> Any:
    return parse_json(await read_body(request, setting))
