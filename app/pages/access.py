"""How a browser presents its token to the pages (docs/security.md, "Pages"): the login form
at /ui/login checks a token like any request (the `read` scope, the rate limits of refused
tokens) and puts it in an HttpOnly, SameSite=Strict cookie scoped to /ui; a proxy may send
`Authorization: Bearer` instead. Only the pages read that cookie, and they only read: the REST
API never accepts it, so a page elsewhere cannot make a browser change anything with it.
The two forms that POST (login, logout) refuse another site's Origin."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from app.api.auth import Credentials, TokenRefused, principal_of
from app.auth import Principal
from app.errors import ApiError, Problem

COOKIE = "modelmon_ui_token"
PREFIX = "/ui"
MAX_FORM_BYTES = 4096


class LoginNeeded(Exception):
    """No token on a page, or a login cookie whose token is refused now (revoked, expired):
    the browser is sent to the login form (and the stale cookie cleared)."""

    def __init__(self, back: str, stale: bool = False) -> None:
        self.back = back
        self.stale = stale


def login_url(back: str) -> str:
    return f"{PREFIX}/login?next={quote(back, safe='/')}"


def safe_next(value: str | None) -> str:
    """Where to go after login: a path of the pages only (never another site)."""
    if not value or not value.startswith(PREFIX + "/") and value != PREFIX:
        return PREFIX
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in value or "//" in value:
        return PREFIX
    return value


def credentials(request: Request, header: HTTPAuthorizationCredentials | None
                ) -> HTTPAuthorizationCredentials | None:
    """The Authorization header's token, else the login cookie's."""
    if header is not None:
        return header
    token = request.cookies.get(COOKIE)
    if token:
        return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    return None


async def reader(request: Request, header: Credentials) -> Principal | None:
    """A page's caller, allowed the `read` scope and the path's model; with no token at all
    (where tokens are required) the browser is sent to the login form."""
    creds = credentials(request, header)
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if creds is None and request.app.state.auth.required:
        raise LoginNeeded(back)
    try:
        return await principal_of(request, creds, "read")
    except TokenRefused:
        if header is None:  # the cookie's token: log in again
            raise LoginNeeded(back, stale=True) from None
        raise


Reader = Annotated[Principal | None, Depends(reader)]


def same_origin(request: Request) -> None:
    """403 for a form posted from another site (the login and logout forms are this
    service's own): the browser's Origin, or its Sec-Fetch-Site, must say so."""
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if (origin is not None and origin != own) or site not in (None, "same-origin", "none"):
        raise ApiError(403, "cross_site_form", "this form is accepted from this service's own "
                       "pages only", [Problem("another site's form", field="origin")])


async def form_token(request: Request) -> tuple[str, str]:
    """The token and the next page from the login form's urlencoded body; 4xx naming the
    field otherwise."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "payload_too_large", f"the login form is at most "
                       f"{MAX_FORM_BYTES} bytes", [Problem("too large", field="body")])
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=4)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_form", "the login form could not be read",
                       [Problem("not an urlencoded form", field="body")]) from None
    token = (fields.get("token") or [""])[0].strip()
    if not token:
        raise ApiError(422, "validation_error", "enter an API token",
                       [Problem("missing", field="token")])
    return token, safe_next((fields.get("next") or [None])[0])


def secure_cookie(request: Request) -> bool:
    mode = request.app.state.settings.pages_cookie_secure
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")
