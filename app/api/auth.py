"""Bearer tokens on every route but /healthz and /readyz, scope by route, model by path.

Whether tokens are required is decided once, at start (``Authenticator.required``): always
with MODELMON_AUTH=on, never with off, and with auto (the default) whenever the service
listens beyond loopback.

What checking a token costs: one verified within MODELMON_TOKEN_CACHE_SECONDS is known from
memory (so a revocation takes effect within that time on every replica), and one refused
within REFUSED_SECONDS (unknown, revoked, expired: by its SHA-256) is refused from memory.
Any other is looked up in the database, but only for an address that has not used up its
refused authentications (MODELMON_RATE_LIMIT_AUTH_FAILURES_PER_SECOND): past them the address
gets 429 before any lookup, so bad tokens cannot make the service query its database at will.
While the database cannot be reached, a token verified within MODELMON_TOKEN_OUTAGE_SECONDS
stays usable, so Prometheus keeps scraping /metrics through an outage.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from app.api.errors import DB_DOWN
from app.auth import Principal, StoredToken, digest, token_id_of
from app.errors import ApiError, Problem
from app.storage import tokens

log = logging.getLogger("modelmon.auth")
bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="An API token (`modelmon tokens create`): "
                                "`Authorization: Bearer mm_<id>_<secret>`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
# How long a refused token is refused from memory. Every refusal is final (an unknown secret
# cannot become valid, a revoked or expired token stays so), so this only bounds memory.
REFUSED_SECONDS = 60.0
# Tokens remembered per process, verified and refused ones each: the oldest go first.
MAX_REMEMBERED = 10_000


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class TokenRefused(ApiError):
    """A 401; ``who`` is the token's own identity when it is genuine but revoked or expired,
    for the audit trail."""

    who: Principal | None = None


def unauthorized(problem: str, who: Principal | None = None) -> TokenRefused:
    return TokenRefused(401, "unauthorized",
                        "send a valid API token: Authorization: Bearer mm_<id>_<secret> "
                        "(create one with `modelmon tokens create`)",
                        [Problem(problem, field="authorization")],
                        headers={"WWW-Authenticate": 'Bearer realm="modelmon"'}, who=who)


def forbidden(problem: str, field: str, index: int | None = None) -> ApiError:
    return ApiError(403, "forbidden", "this token does not allow that; ask an admin for a "
                    "token with the right scope or models",
                    [Problem(problem, field=field, index=index)])


@dataclass(frozen=True)
class _Refusal:
    at: float
    problem: str
    who: Principal | None


class Authenticator:
    def __init__(self, engine: Engine, *, required: bool, cache_seconds: float,
                 outage_seconds: float = 0.0) -> None:
        self.engine = engine
        self.required = required
        self.cache_seconds = cache_seconds
        self.outage_seconds = outage_seconds
        self._verified: OrderedDict[str, tuple[float, StoredToken]] = OrderedDict()
        self._refused: OrderedDict[str, _Refusal] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, token: str) -> Principal | None:
        """The caller, from memory alone: raises the refusal of a token refused lately (or
        not shaped like a token); None when the database must be asked."""
        token_id = token_id_of(token)
        if token_id is None:
            raise unauthorized("not a modelmon token")
        now = time.monotonic()
        key = digest(token)
        with self._lock:
            refusal = self._refused.get(key)
            hit = self._verified.get(token_id)
        if refusal is not None and now - refusal.at < REFUSED_SECONDS:
            raise unauthorized(refusal.problem, refusal.who)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return self._admit(hit[1], token, key, now)
        return None

    def lookup(self, token: str) -> Principal:
        """The caller, as the database says (run in a worker thread). A database that cannot
        be reached raises its error, unless the token was verified within the outage time."""
        token_id = token_id_of(token)
        if token_id is None:
            raise unauthorized("not a modelmon token")
        now = time.monotonic()
        try:
            with self.engine.connect() as conn:
                stored = tokens.get(conn=conn, token_id=token_id)
        except DB_DOWN:
            with self._lock:
                hit = self._verified.get(token_id)
            if hit is None or now - hit[0] >= self.outage_seconds or not hit[1].matches(token):
                raise
            log.warning("database unreachable: token %s accepted as verified %.0f s ago",
                        token_id, now - hit[0], extra={"event": "token_outage_cache",
                                                       "token_id": token_id})
            return self._admit(hit[1], token, digest(token), now)
        if stored is not None:
            self._remember(self._verified, token_id, (now, stored))
        return self._admit(stored, token, digest(token), now)

    def _admit(self, stored: StoredToken | None, token: str, key: str,
               now: float) -> Principal:
        if stored is None or not stored.matches(token):
            raise self._refuse(key, _Refusal(now, "unknown token", None))
        who = Principal(stored.id, stored.name, stored.scopes, stored.models)
        why = stored.usable(datetime.now(UTC))
        if why:
            raise self._refuse(key, _Refusal(now, f"token {why}", who))
        return who

    def _refuse(self, key: str, refusal: _Refusal) -> TokenRefused:
        self._remember(self._refused, key, refusal)
        return unauthorized(refusal.problem, refusal.who)

    def _remember(self, cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > MAX_REMEMBERED:
                cache.popitem(last=False)


def client_address(request: Request) -> str:
    """The client's address (a trusted proxy's forwarded one: app/api/guards.py)."""
    return request.client.host if request.client else "unknown"


def caller_key(request: Request) -> str:
    """Whom rate limits count: the token, or the client address when tokens are off."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None:
        return f"token:{principal.token_id}"
    return f"address:{client_address(request)}"


async def principal_of(request: Request, creds: HTTPAuthorizationCredentials | None,
                       scope: str) -> Principal | None:
    """The caller, within its request rate, allowed ``scope`` and the path's model; None
    when tokens are not required."""
    auth: Authenticator = request.app.state.auth
    if not auth.required:
        request.app.state.rate_limits.request(caller_key(request))
        return None
    principal = await identify(request, creds)
    request.state.principal = principal  # from here on, every refusal is audited with it
    request.app.state.rate_limits.request(caller_key(request))
    if not principal.may(scope):
        raise forbidden(f"needs the {scope} scope; this token has "
                        f"{', '.join(sorted(principal.scopes))}", "authorization")
    model = request.path_params.get("model")
    if model is not None and not principal.may_touch(model):
        raise forbidden("this token is not allowed this model", "model")
    return principal


async def identify(request: Request, creds: HTTPAuthorizationCredentials | None) -> Principal:
    """The token's principal, or 401; 429 instead for an address past its refused
    authentications, before its token is looked up."""
    auth: Authenticator = request.app.state.auth
    limits = request.app.state.rate_limits
    address = client_address(request)
    try:
        if creds is None:
            raise unauthorized("missing bearer token")
        principal = auth.known(creds.credentials)
        if principal is None:
            limits.before_lookup(address)
            principal = await run_in_threadpool(auth.lookup, creds.credentials)
        return principal
    except TokenRefused as refusal:
        if refusal.who is not None:
            request.state.refused = refusal.who  # a genuine token: the audit names it
        limits.refused(address)
        raise


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
