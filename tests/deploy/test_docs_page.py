"""GET /docs: Swagger UI from the packaged assets, offline, under the page's CSP, in
Debian's headless Chromium (Playwright, as tests/test_web_page.py) against the real
gunicorn. Any request off this server, a CSP violation or a script error fails it; the
screenshot lands in test-artifacts/docs-swagger-ui.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from ..v2_server import shared_server
from .test_web_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def server(demo_store):
    return shared_server(demo_store)


def test_docs_headers_and_assets_are_local(server):
    page = requests.get(f"{server.url}/docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http" not in page.text.replace(server.url, "")  # nothing from another origin
    for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/init.js"):
        assert requests.get(server.url + asset, timeout=10).status_code == 200, asset


def test_swagger_ui_renders_the_generated_document_offline(server, tmp_path):
    if not Path(CHROMIUM).exists():  # fail, never skip: the suite installs it
        pytest.fail(f"{CHROMIUM} missing: install deps/apt-browser.txt")
    problems: list[str] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "request",
                lambda r: (
                    None
                    if r.url.startswith(server.url) or r.url.startswith("data:")
                    else problems.append(f"off-site: {r.url}")
                ),
            )
            page.goto(f"{server.url}/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("Predictor")
            expect(page.locator(".opblock-tag-section")).to_have_count(7)
            v2 = page.locator("#operations-tag-v2")
            expect(v2).to_be_visible()
            # Open one operation: its request body example comes from the pydantic model.
            op = page.locator("#operations-v2-v2_infer_post")
            op.locator(".opblock-summary").click()
            expect(op.locator(".opblock-body")).to_contain_text("input-0")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "docs-swagger-ui.png"), full_page=False)
        finally:
            context.close()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    assert problems == [], problems
