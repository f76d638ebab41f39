"""Guards in front of every route: URLs no database can store, the client address behind a
trusted proxy, and the Host a browser sends to a service on loopback."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.errors import ApiError, Problem
from app.settings import listed

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RejectNulInUrl:
    """A NUL character (%00) in the path or the query string is a 400: Postgres text cannot
    hold it, and a name or parameter containing it would otherwise reach a query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            where = ("path" if "\x00" in scope.get("path", "")
                     else "query" if b"%00" in query or b"\x00" in query else None)
            if where is not None:
                err = ApiError(400, "invalid_request", "the URL contains a NUL character "
                               "(%00); names and parameters cannot hold it",
                               [Problem("NUL character", field=where)])
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _address(text: str) -> Address | None:
    """An address as forwarding headers write it: bare, ``1.2.3.4:port``, ``[v6]:port``,
    quoted; None for anything else (``unknown``, an obfuscated ``_name``)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _header(scope: Scope, name: bytes) -> str:
    """Every occurrence of a header, joined in order as one comma-separated list."""
    return ",".join(v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name)


def forwarded_hops(scope: Scope, header: str) -> list[str]:
    """The addresses a chain of proxies recorded, the client first and the nearest proxy
    last: X-Forwarded-For's items, or the ``for=`` of each element of Forwarded (RFC 7239)."""
    value = _header(scope, header.encode())
    if header == "x-forwarded-for":
        return [hop.strip() for hop in value.split(",") if hop.strip()]
    hops = []
    for element in value.split(","):
        pairs = (pair.strip().partition("=") for pair in element.split(";"))
        hops += [v for k, _, v in pairs if k.lower() == "for"][:1]
    return hops


class ForwardedClient:
    """A request from a trusted proxy (MODELMON_TRUSTED_PROXIES) gets the client address its
    proxies forwarded (MODELMON_FORWARDED_HEADER), read from the right: the nearest address
    no trusted proxy vouches for. From anyone else the header is ignored, so a client cannot
    pick the address its rate limits are counted by. Outermost, so logs see it too."""

    def __init__(self, app: ASGIApp, proxies: str, header: str) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(p, strict=False) for p in listed(proxies)]
        self.header = header

    def _trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in n for n in self.networks)

    def client_of(self, peer: str, hops: Iterable[str]) -> str:
        current = peer
        for hop in reversed(list(hops)):
            address = _address(hop)
            if not self._trusted(_address(current)) or address is None:
                break
            current = str(address)
        return current

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client and self._trusted(_address(client[0])):
            address = self.client_of(client[0], forwarded_hops(scope, self.header))
            if address != client[0]:
                scope = {**scope, "client": (address, 0)}
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """The name of a Host header, without its port, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class LoopbackHosts:
    """Where tokens are not required and the service listens on loopback, a Host header must
    name loopback (``localhost``, ``127.0.0.1``, ``[::1]``) or a MODELMON_ALLOWED_HOSTS name;
    anything else is 421. A web page whose own name its author re-points at 127.0.0.1 (DNS
    rebinding) sends that name, so it cannot read or write through the visitor's browser."""

    def __init__(self, app: ASGIApp, allowed: str) -> None:
        self.app = app
        self.allowed = {"localhost", *(host_name(h) for h in listed(allowed))}

    def allows(self, host: str) -> bool:
        name = host_name(host)
        if name in self.allowed:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                         if k == b"host"), None)
            if host is not None and not self.allows(host):
                err = ApiError(421, "host_not_allowed",
                               "this service answers only to loopback names (localhost, "
                               "127.0.0.1, [::1]) and the names in MODELMON_ALLOWED_HOSTS; add "
                               "this name there if it is yours",
                               [Problem(f"host {host[:100]!r} is not allowed", field="host")])
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)
