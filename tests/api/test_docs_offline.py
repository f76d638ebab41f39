"""/docs and /redoc work without the internet: every script, style and icon their pages load
is served by the service itself."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_spec_viewers_load_nothing_from_elsewhere(client, page):
    r = client.get(page)
    assert r.status_code == 200, r.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", r.text)
    assert urls and not [u for u in urls if "://" in u or u.startswith("//")], urls
    assert "cdn" not in r.text.lower()
    for url in urls:
        got = client.get(url)
        assert got.status_code == 200 and got.content, url
