"""One HTTP exchange with the service over a kept-alive connection, standard library only.

A connection is used by one thread at a time: the sender thread owns one, and every
registration call opens its own.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

from modelmon_client._version import __version__

USER_AGENT = f"modelmon-client/{__version__}"
# The service closes idle keep-alive connections after 5 s; a request on a connection the
# server is closing would fail for nothing, so a connection idle this long is reopened first.
IDLE_REOPEN_SECONDS = 4.0
# What a broken or stale connection raises; the request may or may not have reached the
# service, which is why every request this client retries is idempotent.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


class ModelmonError(Exception):
    """The service refused a request; ``code``, ``message`` and ``details`` are its error body
    (``details``: a list of ``{"index", "field", "problem"}``)."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[dict[str, Any]] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        where = "; ".join(f"{d.get('field', '')}: {d.get('problem', '')}"
                          for d in self.details[:5])
        if len(self.details) > 5:  # every one is in .details
            where += f"; and {len(self.details) - 5} more in .details"
        super().__init__(f"{status} {code}: {message}" + (f" ({where})" if where else ""))


class Response(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The decoded body; None when it is not JSON (a proxy's HTML page, say)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def retry_after(self) -> float | None:
        """Seconds from a ``Retry-After`` header in seconds; None when absent or a date."""
        value = self.headers.get("retry-after")
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:
            return None

    def error(self) -> ModelmonError:
        body = self.json()
        if isinstance(body, dict):
            details = body.get("details")
            return ModelmonError(self.status, str(body.get("code", "http_error")),
                                 str(body.get("message", "")),
                                 details if isinstance(details, list) else [])
        return ModelmonError(self.status, "http_error",
                             self.body[:200].decode("utf-8", "replace"))


def model_path(model: str, *rest: str) -> str:
    return "/v1/models/" + "/".join(quote(p, safe="") for p in (model, *rest))


class Connection:
    """A kept-alive HTTP(S) connection to ``url`` (which may carry a path prefix)."""

    def __init__(self, url: str, *, token: str | None, timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/prefix], got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._ssl = ssl_context
        self._conn: http.client.HTTPConnection | None = None
        self._used_at = 0.0
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def _open(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                               context=self._ssl or ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Response:
        """One request; raises one of CONNECTION_ERRORS when no response was read. A kept-alive
        connection the server had closed is retried once at once on a new one."""
        all_headers = {**self._headers, **(headers or {})}
        fresh = self._conn is None or time.monotonic() - self._used_at > IDLE_REOPEN_SECONDS
        if fresh:
            self.close()
            self._conn = self._open()
        try:
            return self._exchange(method, path, body, all_headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if fresh:
                raise
            self._conn = self._open()
            return self._exchange(method, path, body, all_headers)
        except BaseException:
            self.close()
            raise

    def _exchange(self, method: str, path: str, body: bytes | None,
                  headers: dict[str, str]) -> Response:
        conn = self._conn
        assert conn is not None
        conn.request(method, self._prefix + path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self._used_at = time.monotonic()
        if resp.will_close:
            self.close()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None


def call(url: str, token: str | None, method: str, path: str, *, json_body: Any = None,
         body: bytes | None = None, content_type: str = "application/json",
         timeout: float = 30.0, ok: tuple[int, ...] = (200, 201)) -> Any:
    """A one-off request (registration, uploads): the decoded JSON answer, or ModelmonError."""
    if json_body is not None:
        body = json.dumps(json_body, allow_nan=False).encode()
    conn = Connection(url, token=token, timeout=timeout)
    try:
        resp = conn.request(method, path, body,
                            {"Content-Type": content_type} if body is not None else None)
    except CONNECTION_ERRORS as exc:
        raise ModelmonError(0, "unreachable", f"{url} could not be reached: {exc!r}") from exc
    finally:
        conn.close()
    if resp.status not in ok:
        raise resp.error()
    return resp.json()
