"""The modelmon API over HTTP, as the command line uses it (`report`, `import`, `demo`).

Standard library only. Every failure a person can do something about (an unreachable URL, a
missing or refused token, an unknown model, a refused record) is a ``CliError`` carrying one
line that says what happened and what to do; `modelmon` prints it on stderr and exits 1,
without a traceback.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from app.cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:8000"
# Answers worth sending again unchanged, after Retry-After when given: the service or a proxy
# in front of it was overloaded, down or too slow (408: a body that arrived too slowly, as when
# this process stalls); never a refusal (409, 422, ...). The client package retries the same
# (modelmon_client._sender.RETRY_STATUSES); a test holds the two equal.
RETRYABLE = frozenset({408, 429, 502, 503, 504})
# What a broken or stale connection raises (urllib's URLError is an OSError), as in the client
# package (modelmon_client._http.CONNECTION_ERRORS); retried like the statuses above.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


class HttpError(CliError):
    """The service answered with an error status; ``body`` is its JSON error, if any."""

    def __init__(self, message: str, status: int, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def add_connection_args(parser: Any) -> None:
    parser.add_argument("--url", default=None,
                        help=f"the modelmon API (MODELMON_URL, default {DEFAULT_URL})")
    parser.add_argument("--token", default=None,
                        help="API token, sent as a bearer token (MODELMON_TOKEN; default: "
                        "none, for a service without tokens on loopback)")


def int_between(low: int, high: int) -> Any:
    """An argparse type: an integer from ``low`` to ``high``, or a usage error saying so."""

    def parse(text: str) -> int:
        n = int(text)
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return n

    return parse


class ApiClient:
    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 60.0, retries: int = 0, max_wait: float = 30.0) -> None:
        url = (url or os.environ.get("MODELMON_URL") or DEFAULT_URL).rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(f"--url {url!r} is not an http:// or https:// URL")
        self.url = url
        self.token = token or os.environ.get("MODELMON_TOKEN") or None
        self.timeout = timeout
        self.retries = retries  # further attempts on connection errors and RETRYABLE answers
        self.max_wait = max_wait

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return self.request("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None,
             ctype: str = "application/json", compress: bool = False) -> Any:
        data = raw if raw is not None else json.dumps(body, allow_nan=False).encode()
        return self.request("POST", path, data, ctype, compress)

    def request(self, method: str, path: str, data: bytes | None = None,
                ctype: str = "application/json", compress: bool = False) -> Any:
        headers = {"accept": "application/json"}
        if data is not None:
            headers["content-type"] = ctype
            if compress:
                data = gzip.compress(data, compresslevel=5)
                headers["content-encoding"] = "gzip"
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as err:
                body = _json_body(err)
                if err.code in RETRYABLE and attempt < self.retries:
                    self._wait(attempt, err.headers.get("retry-after"))
                    continue
                raise HttpError(self._describe(method, path, err.code, body), err.code,
                                body) from None
            except CONNECTION_ERRORS as err:
                if attempt < self.retries:
                    self._wait(attempt, None)
                    continue
                reason = getattr(err, "reason", err)
                raise CliError(f"cannot reach modelmon at {self.url} ({reason}); is it "
                               "running there? (--url or MODELMON_URL)") from None
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        try:
            delay = float(retry_after) if retry_after else 0.0
        except ValueError:
            delay = 0.0
        # exponential backoff with jitter, at least what the service asked for
        delay = max(delay, min(self.max_wait, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0))
        time.sleep(min(delay, self.max_wait))

    def _describe(self, method: str, path: str, status: int, body: dict[str, Any]) -> str:
        message = body.get("message") or f"HTTP {status}"
        details = [d for d in body.get("details") or []
                   if isinstance(d, dict) and d.get("problem") != message]
        shown = "; ".join(_detail(d) for d in details[:3])
        more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
        line = f"{method} {path.split('?')[0]}: {status} {message}"
        if shown:
            line += f" [{shown}{more}]"
        if status == 401:
            line += (" -- pass --token or set MODELMON_TOKEN" if not self.token
                     else " -- the token is unknown, expired or revoked")
        elif status == 403:
            line += " -- the token lacks the scope or model this needs"
        return line


def _detail(d: dict[str, Any]) -> str:
    where = ".".join(str(x) for x in (f"records[{d['index']}]" if d.get("index") is not None
                                      else None, d.get("field")) if x)
    return f"{where}: {d.get('problem')}" if where else str(d.get("problem"))


def _json_body(err: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body = json.loads(err.read() or b"{}")
    except (ValueError, OSError):
        return {}
    return body if isinstance(body, dict) else {}
