"""The pages under /ui: server-rendered HTML (Jinja2 templates in this package) with inline
SVG, no script and nothing loaded from elsewhere (the Content-Security-Policy forbids it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.api.auth import identify
from app.api.deps import EngineDep, ProfilesDep, SettingsDep, in_snapshot
from app.api.reports import End, Start
from app.errors import ApiError, Problem
from app.evaluation import reports
from app.evaluation.windows import whole_buckets
from app.pages import access, history, views, windows
from app.pages import feature as features
from app.pages import versions as version_weights
from app.pages.access import COOKIE, PREFIX, LoginNeeded, Reader

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]), trim_blocks=True,
                        lstrip_blocks=True)
# Nothing but this page itself: no script, no frame, no request to another host.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
Preset = Annotated[str | None, Query(max_length=8, description="1h, 6h, 24h or 7d")]

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def fmt(value: Any, digits: int = 4) -> str:
    """A number as the pages print it: the report's float to ``digits`` significant digits
    (what the tests parse back and compare)."""
    if value is None:
        return "–"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


TEMPLATES.filters["num"] = fmt
TEMPLATES.filters["pct"] = lambda v: "–" if v is None else f"{v:.1%}"


def page(request: Request, name: str, **context: Any) -> HTMLResponse:
    # "log out" only where there is a login to end: the cookie (not a proxy's header, not
    # the loopback default without tokens)
    html = TEMPLATES.get_template(name).render(root=request.scope.get("root_path", ""),
                                               prefix=PREFIX,
                                               logged_in=COOKIE in request.cookies, **context)
    return HTMLResponse(html, headers=headers())


def headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


@router.get("")
async def models(request: Request, principal: Reader, engine: EngineDep,
                 settings: SettingsDep, profiles: ProfilesDep, start: Start = None,
                 end: End = None, preset: Preset = None) -> HTMLResponse:
    w = windows.resolve(settings, start, end, preset)
    allowed = (lambda _name: True) if principal is None else principal.may_touch
    rows = await in_snapshot(engine, lambda c: views.models_view(
        c, settings, profiles, allowed, w))
    shown = whole_buckets(*reports.window(settings, w.start, w.end),
                          settings.job_interval_seconds)  # as the drift report widens it
    nav = windows.links(settings, PREFIX, tuple(t.isoformat() for t in shown))
    return page(request, "models.html", rows=rows, nav=nav, window=w,
                query=_query(w))


@router.get("/models/{model}/versions/{version}")
async def version(request: Request, model: str, version: str, principal: Reader,
                  engine: EngineDep, settings: SettingsDep, profiles: ProfilesDep,
                  start: Start = None, end: End = None, preset: Preset = None
                  ) -> HTMLResponse:
    w = windows.resolve(settings, start, end, preset)
    v = await in_snapshot(engine, lambda c: views.version_view(
        c, settings, profiles, model, version, w))
    shown = (v.reports.drift["window_start"], v.reports.drift["window_end"])
    nav = windows.links(settings, request.url.path, shown)
    return page(request, "version.html", v=v, nav=nav, query=_query(w),
                spark_windows=history.SPARK_WINDOWS)


@router.get("/models/{model}/versions")
async def versions(request: Request, model: str, principal: Reader, engine: EngineDep,
                   settings: SettingsDep) -> HTMLResponse:
    rows = await in_snapshot(engine, lambda c: version_weights.versions_view(
        c, settings, model))
    return page(request, "versions.html", model=model, rows=rows)


@router.get("/models/{model}/versions/{version}/features/{feature}")
async def feature(request: Request, model: str, version: str, feature: str,
                  principal: Reader, engine: EngineDep, settings: SettingsDep,
                  profiles: ProfilesDep, start: Start = None, end: End = None,
                  preset: Preset = None) -> HTMLResponse:
    w = windows.resolve(settings, start, end, preset)
    v = await in_snapshot(engine, lambda c: features.feature_view(
        c, settings, profiles, model, version, feature, w))
    nav = windows.links(settings, request.url.path, (v.window_start, v.window_end))
    return page(request, "feature.html", v=v, nav=nav, query=_query(w),
                interval=settings.job_interval_seconds)


def _query(w: views.Window) -> str:
    given = {k: t.isoformat() for k, t in (("start", w.start), ("end", w.end)) if t}
    return f"?{urlencode(given)}" if given else ""


@router.get("/login")
async def login_form(request: Request, next: Annotated[str | None, Query(
        max_length=2048)] = None) -> HTMLResponse:
    return page(request, "login.html", next=access.safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """The form's token, checked like any request's (401 for a bad one, 403 without the
    `read` scope), then kept in the HttpOnly cookie the pages read."""
    access.same_origin(request)
    token, back = await access.form_token(request)
    if request.app.state.auth.required:
        who = await identify(request, HTTPAuthorizationCredentials(scheme="Bearer",
                                                                   credentials=token))
        if not who.may("read"):
            raise ApiError(403, "forbidden", "the pages need a token with the read scope",
                           [Problem("needs the read scope", field="token")])
    out = RedirectResponse(back, status_code=303, headers=headers())
    out.set_cookie(COOKIE, token, httponly=True, samesite="strict", path=PREFIX,
                   secure=access.secure_cookie(request))
    return out


@router.post("/logout")
async def logout(request: Request) -> Response:
    access.same_origin(request)
    out = RedirectResponse(f"{PREFIX}/login", status_code=303, headers=headers())
    out.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict",
                      secure=access.secure_cookie(request))
    return out


def install(app: FastAPI) -> None:
    """The pages' routes, and the login form for a browser that sent no token."""
    app.include_router(router)

    async def to_login(request: Request, exc: LoginNeeded) -> Response:
        out = RedirectResponse(access.login_url(exc.back), status_code=303, headers=headers())
        if exc.stale:
            out.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict",
                              secure=access.secure_cookie(request))
        return out

    app.add_exception_handler(LoginNeeded, to_login)

