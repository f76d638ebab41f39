"""The pages behind tokens: no token sends a browser to the login form; the form checks the
token (read scope) and keeps it in an HttpOnly, SameSite=Strict cookie scoped to /ui that the
REST API never accepts; another site's form is refused; a proxy's Authorization header works
as on the API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.test_api_auth import bearer, make_token
from tests.pages.pages_data import page_settings, seed_model

PAGE = "/ui/models/credit/versions/v1"
OWN = "http://testserver"


@pytest.fixture
def settings(db_url: str):
    return page_settings(db_url, auth="on", token_cache_seconds=0,
                         rate_limit_auth_failures_per_second=100)


def login(client, token: str, next_page: str = "/ui", origin: str = OWN):
    return client.post("/ui/login", content=f"token={token}&next={next_page}",
                       headers={"content-type": "application/x-www-form-urlencoded",
                                "origin": origin}, follow_redirects=False)


def test_without_a_token_a_page_sends_the_browser_to_the_login_form(client):
    r = client.get(f"{PAGE}?preset=1h", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=/ui/models/credit/versions/v1%3Fpreset%3D1h"
    form = client.get(r.headers["location"])
    assert form.status_code == 200 and 'name="token"' in form.text
    assert 'value="/ui/models/credit/versions/v1?preset=1h"' in form.text


def test_login_sets_an_httponly_strict_cookie_the_pages_read_and_the_api_does_not(
        client, engine):
    admin = make_token(engine, "admin", "ingest", name="admin")
    seed_model(client, bearer(admin), n=50)
    client.headers.pop("authorization")
    read = make_token(engine, "read", name="viewer")
    r = login(client, read, PAGE)
    assert r.status_code == 303 and r.headers["location"] == PAGE
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("modelmon_ui_token=")
    for attribute in ("HttpOnly", "Path=/ui", "SameSite=strict"):
        assert attribute.lower() in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http here (auto)
    with TestClient(client.app, cookies={"modelmon_ui_token": read}) as browser:
        assert browser.get(PAGE).status_code == 200
        assert "log out" in browser.get(PAGE).text
        assert browser.get("/ui").status_code == 200
        # the REST API takes the header only: the cookie is no credential there
        assert browser.get("/v1/models").status_code == 401
        out = browser.post("/ui/logout", headers={"origin": OWN}, follow_redirects=False)
        assert out.status_code == 303 and 'modelmon_ui_token=""' in out.headers["set-cookie"]


def test_a_proxy_may_send_the_authorization_header_instead(client, engine):
    read = make_token(engine, "read")
    r = client.get("/ui", headers=bearer(read))
    assert r.status_code == 200
    assert "log out" not in r.text  # no login to end: the proxy holds the token


@pytest.mark.parametrize("which", ["unknown", "ingest", "other model"])
def test_a_bad_token_is_refused_by_the_form_and_by_the_pages(client, engine, which):
    token = {"unknown": lambda: "mm_abc_def",
             "ingest": lambda: make_token(engine, "ingest"),
             "other model": lambda: make_token(engine, "read", models=["other"])}[which]()
    r = login(client, token)
    if which == "other model":  # a read token; the model's page then refuses it
        with TestClient(client.app, cookies={"modelmon_ui_token": token}) as browser:
            page = browser.get(PAGE)
            assert page.status_code == 403 and page.json()["details"][0]["field"] == "model"
        return
    assert r.status_code in (401, 403), r.text
    assert r.json()["details"][0]["field"] in ("authorization", "token")
    assert "set-cookie" not in r.headers
    with TestClient(client.app, cookies={"modelmon_ui_token": token}) as browser:
        page = browser.get("/ui", follow_redirects=False)
        if which == "unknown":  # a refused cookie: log in again, the cookie cleared
            assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=/ui"
            assert 'modelmon_ui_token=""' in page.headers["set-cookie"]
        else:  # a genuine token without the read scope
            assert page.status_code == 403
    # the header is answered as on the API, never redirected
    assert client.get("/ui", headers=bearer(token), follow_redirects=False).status_code in (
        401, 403)


def test_another_sites_form_is_refused(client, engine):
    read = make_token(engine, "read")
    r = login(client, read, origin="https://evil.example")
    assert r.status_code == 403 and r.json()["code"] == "cross_site_form"
    r = client.post("/ui/login", content=f"token={read}", follow_redirects=False, headers={
        "content-type": "application/x-www-form-urlencoded", "sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    assert client.post("/ui/logout", headers={"origin": "https://evil.example"}
                       ).status_code == 403


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"next=/ui", 422, "token"),
    (b"token=" + b"x" * 5000, 413, "body"),
    (b"token=\xff\xfe", 400, "body"),
])
def test_a_bad_login_form_is_a_4xx_naming_the_field(client, body, status, field):
    r = client.post("/ui/login", content=body, follow_redirects=False, headers={
        "content-type": "application/x-www-form-urlencoded", "origin": OWN})
    assert r.status_code == status, r.text
    assert r.json()["details"][0]["field"] == field


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui", "/v1/models",
                                    "/ui\\@evil.example"])
def test_login_never_sends_the_browser_elsewhere(client, engine, target):
    r = login(client, make_token(engine, "read"), target)
    assert r.status_code == 303 and r.headers["location"] == "/ui"
