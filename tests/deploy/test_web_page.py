"""The web page at / in Debian's headless Chromium (driven by Playwright), served by the
real gunicorn: pick a model, fill the form, read the prediction; bad values are explained.

Screenshots land in test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright

from tests.helpers import REPO
from tests.v2_server import shared_server

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Without the networking flags Chromium phones home and this machine refuses it loudly.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IRIS = {
    "sepal length (cm)": "5.1",
    "sepal width (cm)": "3.5",
    "petal length (cm)": "1.4",
    "petal width (cm)": "0.2",
}


@pytest.fixture(scope="module")
def server(demo_store):
    return shared_server(demo_store)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not Path(CHROMIUM).exists():  # fail, never skip: the suite installs it
        pytest.fail(
            f"{CHROMIUM} missing: install deps/apt-browser.txt (scripts/install-test-deps.sh)"
        )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context, server, request):
    page = browser_context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: None if r.url.startswith(server.url) else problems.append(f"off-site: {r.url}"),
    )
    page.goto(f"{server.url}/")
    yield page
    page.close()
    # CSP violations, script errors and requests to any other origin all land here.
    allowed = getattr(request.function, "expected_console_errors", ())
    assert not [p for p in problems if not any(a in p for a in allowed)], problems


def _field(page: Page, name: str):
    return page.get_by_label(name, exact=True)


def _pick_iris(page: Page) -> None:
    expect(page.locator("#model-select option")).to_have_count(3)
    page.select_option("#model-select", "iris")
    expect(_field(page, "petal width (cm)")).to_be_visible()


def _screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_pick_iris_fill_the_form_and_see_the_prediction(page):
    _pick_iris(page)
    expect(page.locator("#service-status")).to_have_text("service ready")
    # Inputs, outputs and versions with their metrics; the current one marked.
    expect(page.locator("#fields .field")).to_have_count(4)
    expect(page.locator("#feature-0-hint")).to_contain_text("training data ranged")
    expect(page.locator("#model-outputs")).to_contain_text("setosa, versicolor, virginica")
    current = page.locator("#versions-body tr.is-current")
    expect(current).to_contain_text("current")
    expect(current).to_contain_text("accuracy")
    for name, value in IRIS.items():
        _field(page, name).fill(value)
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#prediction")).to_have_text("setosa")
    top = page.locator("#probabilities li").first
    expect(top).to_contain_text("setosa")
    expect(top).to_contain_text("%")
    assert float(top.locator(".proba-value").inner_text().rstrip("%")) > 50
    expect(page.locator("#probabilities li")).to_have_count(3)
    _screenshot(page, "web-page-iris.png")


def test_bad_values_are_explained_next_to_the_field(page):
    _pick_iris(page)
    for name, value in IRIS.items():
        _field(page, name).fill(value)
    _field(page, "petal length (cm)").fill("abc")
    page.get_by_role("button", name="Predict").click()
    error = page.locator("#feature-2-error")
    expect(error).to_contain_text('"abc" is not a number')
    expect(page.locator("#form-error")).to_contain_text("Some inputs need fixing")
    expect(page.locator("#prediction")).to_have_count(0)
    _screenshot(page, "web-page-iris-errors.png")
    _field(page, "petal length (cm)").fill("")
    expect(error).to_contain_text("Enter a number")
    _field(page, "petal length (cm)").fill("40")  # accepted, but out of the training range
    expect(error).to_contain_text("Outside the training range")


def test_the_servers_refusal_is_shown_next_to_the_field(page, server):
    """What only the server can judge: its exact message lands next to the named field."""
    _pick_iris(page)

    def tamper(route):
        body = json.loads(route.request.post_data)
        body["instances"][0][3] = "wide"  # what a buggy client might send
        route.continue_(post_data=json.dumps(body))

    page.route("**/v1/models/iris:predict", tamper)
    for name, value in IRIS.items():
        _field(page, name).fill(value)
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#feature-3-error")).to_contain_text(
        'feature "petal width (cm)": expected a number, got string "wide"'
    )
    expect(page.locator("#form-error")).to_contain_text("The service refused the input")


# Chromium logs the refused request itself; that one is the point of the test.
test_the_servers_refusal_is_shown_next_to_the_field.expected_console_errors = ("status of 400",)


def test_a_service_with_api_keys_gets_the_key_asked_for(page):
    """A 401 (PREDICTOR_API_KEYS set) reveals the key field; the key goes in X-API-Key."""
    _pick_iris(page)
    seen: list[str | None] = []

    def keyed(route):
        key = route.request.headers.get("x-api-key")
        seen.append(key)
        if key != "k-123":
            route.fulfill(
                status=401,
                content_type="application/json",
                body=json.dumps({"error": {"code": "unauthorized", "message": "API key needed."}}),
            )
        else:
            route.continue_()

    page.route("**/v1/models/iris:predict", keyed)
    expect(page.locator("#api-key")).to_be_hidden()
    for name, value in IRIS.items():
        _field(page, name).fill(value)
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#form-error")).to_contain_text("API key needed. Enter your API key")
    page.get_by_label("API key").fill("k-123")
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#prediction")).to_have_text("setosa")
    assert seen == [None, "k-123"]


test_a_service_with_api_keys_gets_the_key_asked_for.expected_console_errors = ("status of 401",)


def test_regressor_and_pinned_version(page):
    expect(page.locator("#model-select option")).to_have_count(3)
    page.select_option("#model-select", "diabetes")
    expect(page.locator("#fields .field")).to_have_count(10)
    page.get_by_role("button", name="Fill in a sample").click()
    page.select_option("#version-select", "1")
    page.get_by_role("button", name="Predict").click()
    prediction = page.locator("#prediction")
    expect(prediction).not_to_be_empty()
    assert float(prediction.inner_text()) > 0
    expect(page.locator("#probabilities")).to_have_count(0)
    expect(page.locator("#curl")).to_contain_text("/v1/models/diabetes/versions/1:predict")


def test_security_headers(server):
    for path in ("/", "/web/app.js", "/web/style.css"):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code == 200
        headers = response.headers
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
    page = requests.get(server.url + "/", timeout=10).text
    assert "http://" not in page and "https://" not in page  # nothing from another origin
    assert "<script>" not in page and "style=" not in page  # nothing inline for the CSP to block


def test_a_late_answer_never_replaces_the_model_chosen_since(browser_context, server):
    """The page describes the default model at load; a user who picks another model and
    starts typing before that answer arrives keeps the model picked and what was typed."""
    page = browser_context.new_page()
    page.set_default_timeout(10_000)
    held = []

    def hold_the_first_describe(route) -> None:  # noqa: ANN001 - playwright's Route
        if not held:
            held.append(route)  # answered only once the user has chosen again
        else:
            route.continue_()

    page.route("**/v1/models/*", hold_the_first_describe)
    try:
        page.goto(f"{server.url}/")
        expect(page.locator("#model-select option")).to_have_count(3)
        assert held and held[0].request.url.endswith("/v1/models/iris")
        page.select_option("#model-select", "iris-rf")
        expect(page.locator("#model-estimator")).to_contain_text("RandomForest")
        _field(page, "sepal length (cm)").fill("5.1")
        with page.expect_response("**/v1/models/iris"):
            held[0].continue_()
        # Let the page handle that answer (parse it, and render if it were to).
        page.evaluate("() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 100)))")
        expect(page.locator("#model-estimator")).to_contain_text("RandomForest")
        assert page.locator("#model-select").input_value() == "iris-rf"
        expect(_field(page, "sepal length (cm)")).to_have_value("5.1")
    finally:
        page.close()
