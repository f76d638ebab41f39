"""The OpenAPI spec (/openapi.json) and its viewers (/docs, /redoc), with MODELMON_DOCS_ENABLED.
Where tokens are required they need one with the `read` scope, like the routes they describe,
unless MODELMON_DOCS_PUBLIC; a browser cannot send a bearer token when it loads a page, so an
interactive viewer behind tokens is for a local copy of the spec or a public one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from app.api.auth import Credentials, caller_key, principal_of

SPEC, DOCS, REDIRECT, REDOC = "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"


async def reader(request: Request, creds: Credentials) -> None:
    """A `read` token where tokens are required, unless the docs are public; within the
    caller's request rate either way."""
    if request.app.state.settings.docs_public:
        request.app.state.rate_limits.request(caller_key(request))
        return
    await principal_of(request, creds, "read")


router = APIRouter(include_in_schema=False, dependencies=[Depends(reader)])

# Every tag the routes use, described once (a linter flags a tag nobody defines).
TAGS = [
    {"name": "health", "description": "Liveness and readiness probes; never need a token."},
    {"name": "models", "description": "Register models and versions, their policies and "
     "maintenance windows."},
    {"name": "ingest", "description": "Send predictions, labels and per-window summaries."},
    {"name": "reports", "description": "References, weights and the drift, calibration, "
     "cohort and weight reports over any window."},
    {"name": "metrics", "description": "The Prometheus exposition."},
]


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    """What the generated spec lacks for linters and generated clients: the tags, a contact
    and licence, and the server (the service serving this spec, so a relative URL)."""
    spec["info"].setdefault("contact", {"name": "modelmon",
                                        "url": "https://github.com/modelmon/modelmon"})
    spec["info"].setdefault("license", {"name": "Apache-2.0", "identifier": "Apache-2.0"})
    spec.setdefault("servers", [{"url": "/", "description": "this service"}])
    spec["tags"] = TAGS
    return spec


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get(SPEC)
async def spec(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


# The viewers' scripts and styles, served by the service itself (a page that loads them from a
# CDN is blank where the internet is not reachable): the files fastapi-offline ships.
ASSETS = "/docs/assets"
ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"


def assets() -> StaticFiles:
    return StaticFiles(directory=ASSET_DIR)


@router.get(DOCS)
async def swagger(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(openapi_url=root + SPEC,
                               title=f"{request.app.title} - Swagger UI",
                               oauth2_redirect_url=root + REDIRECT,
                               swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{root}{ASSETS}/favicon.png")


@router.get(REDIRECT)
async def swagger_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC)
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(openapi_url=root + SPEC, title=f"{request.app.title} - ReDoc",
                          redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
                          redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
                          with_google_fonts=False)
