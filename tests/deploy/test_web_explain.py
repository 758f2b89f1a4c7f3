"""The explanation chart under a prediction, in headless Chromium (Playwright)."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.deploy.test_web_page import (  # noqa: F401 - fixtures
    IRIS,
    _field,
    _pick_iris,
    _screenshot,
    browser_context,
    page,
    server,
)


def test_prediction_shows_the_contributions_chart(page):  # noqa: F811 - the fixture
    _pick_iris(page)
    expect(page.locator("#model-estimator")).to_contain_text("LogisticRegression")
    for name, value in IRIS.items():
        _field(page, name).fill(value)
    for name, value in IRIS.items():  # the form was not re-rendered under our typing
        expect(_field(page, name)).to_have_value(value)
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#prediction")).to_have_text("setosa")
    bars = page.locator("#contributions li")
    expect(bars).to_have_count(4)  # one bar per feature
    summary = page.locator("#explanation-summary")
    expect(summary).to_contain_text("Base value")
    expect(summary).to_contain_text("output")
    # iris is a logistic regression: explained in the probability the page shows, exactly.
    expect(summary).to_contain_text("probability, exact_shapley")
    values = [
        float(v) for v in page.locator("#contributions .contribution-value").all_inner_texts()
    ]
    magnitudes = [abs(v) for v in values]
    assert magnitudes == sorted(magnitudes, reverse=True)  # largest first
    for i, v in enumerate(values):  # signed colours
        expected = "cbar positive" if v >= 0 else "cbar negative"
        assert bars.nth(i).locator(".cbar").get_attribute("class") == expected
    # The numbers add up as the API promises (3 decimals shown).
    text = summary.inner_text()
    base = float(text.split("Base value ")[1].split(" ")[0])
    output = float(text.split("output ")[1].split(" ")[0])
    assert abs(base + sum(values) - output) < 0.01
    _screenshot(page, "web-page-iris-explanation.png")
