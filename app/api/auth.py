"""Bearer tokens on every route but /healthz and /readyz, scope by route, model by path.

Whether tokens are required is decided once, at start (``Authenticator.required``): always
with MODELMON_AUTH=on, never with off, and with auto (the default) whenever the service
listens beyond loopback. A verified token is remembered for MODELMON_TOKEN_CACHE_SECONDS, so
a revocation takes effect within that time on every replica.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from app.auth import Principal, StoredToken, token_id_of
from app.errors import ApiError, Problem
from app.storage import tokens

log = logging.getLogger("modelmon.auth")
bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="An API token (`modelmon tokens create`): "
                                "`Authorization: Bearer mm_<id>_<secret>`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unauthorized(problem: str) -> ApiError:
    return ApiError(401, "unauthorized",
                    "send a valid API token: Authorization: Bearer mm_<id>_<secret> "
                    "(create one with `modelmon tokens create`)",
                    [Problem(problem, field="authorization")],
                    headers={"WWW-Authenticate": 'Bearer realm="modelmon"'})


def forbidden(problem: str, field: str, index: int | None = None) -> ApiError:
    return ApiError(403, "forbidden", "this token does not allow that; ask an admin for a "
                    "token with the right scope or models",
                    [Problem(problem, field=field, index=index)])


class Authenticator:
    def __init__(self, engine: Engine, *, required: bool, cache_seconds: float) -> None:
        self.engine = engine
        self.required = required
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, StoredToken | None]] = {}
        self._lock = threading.Lock()

    def _stored(self, token_id: str) -> StoredToken | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token_id)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        with self.engine.connect() as conn:
            stored = tokens.get(conn=conn, token_id=token_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token_id] = (now, stored)
        return stored

    def verify(self, token: str) -> Principal:
        token_id = token_id_of(token)
        if token_id is None:
            raise unauthorized("not a modelmon token")
        stored = self._stored(token_id)
        if stored is None or not stored.matches(token):
            raise unauthorized("unknown token")
        why = stored.usable(datetime.now(UTC))
        if why:
            raise unauthorized(f"token {why}")
        return Principal(stored.id, stored.name, stored.scopes, stored.models)


def caller_key(request: Request) -> str:
    """Whom rate limits count: the token, or the client address when tokens are off."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None:
        return f"token:{principal.token_id}"
    return f"address:{request.client.host if request.client else 'unknown'}"


async def principal_of(request: Request, creds: HTTPAuthorizationCredentials | None,
                       scope: str) -> Principal | None:
    """The caller, allowed ``scope`` and the path's model, within its request rate; None
    when tokens are not required."""
    principal = await _authenticate(request, creds, scope)
    request.app.state.rate_limits.request(caller_key(request))
    return principal


async def _authenticate(request: Request, creds: HTTPAuthorizationCredentials | None,
                        scope: str) -> Principal | None:
    auth: Authenticator = request.app.state.auth
    if not auth.required:
        return None
    if creds is None:
        raise unauthorized("missing bearer token")
    principal = await run_in_threadpool(auth.verify, creds.credentials)
    if not principal.may(scope):
        raise forbidden(f"needs the {scope} scope; this token has "
                        f"{', '.join(sorted(principal.scopes))}", "authorization")
    model = request.path_params.get("model")
    if model is not None and not principal.may_touch(model):
        raise forbidden("this token is not allowed this model", "model")
    request.state.principal = principal
    return principal


def auth_responses() -> dict[int | str, dict[str, Any]]:
    """The answers every token-guarded route may give, in the usual error shape."""
    from app.api.schemas import ErrorBody

    return {401: {"model": ErrorBody, "description": "no valid API token"},
            403: {"model": ErrorBody, "description": "the token lacks the scope or model"},
            429: {"model": ErrorBody, "description": "over the caller's rate limit"}}


def scoped(by_method: dict[str, str]) -> Callable[..., Any]:
    """A router dependency: the scope each HTTP method of its routes needs."""
    async def dependency(request: Request, creds: Credentials) -> Principal | None:
        method = "GET" if request.method == "HEAD" else request.method
        return await principal_of(request, creds, by_method[method])
    return dependency


def admit_batch(request: Request, names: list[Any]) -> None:
    """Before a batch is written: the caller's records rate, then 403 naming every record
    whose model the caller's token does not allow (entries that are not model names are left
    to validation)."""
    request.app.state.rate_limits.records(caller_key(request), len(names))
    check_models(request, names)


def check_models(request: Request, names: list[Any]) -> None:
    """403 naming every record whose model the caller's token does not allow."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None or principal.models is None:
        return
    bad = [Problem("this token is not allowed this model", field="model", index=i)
           for i, name in enumerate(names)
           if isinstance(name, str) and name not in principal.models]
    if bad:
        raise ApiError(403, "forbidden", "the batch names models this token may not write; "
                       "nothing was stored", bad)
