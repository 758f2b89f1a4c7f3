"""The web page on a user's own model (README's churn example, published from its data):
it opens on the default model, offers the recorded categories as a select, lets a
nullable feature stay empty, shows both scikit-learn versions, and predicts what
scikit-learn predicts. Headless Chromium; screenshot in test-artifacts/."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn
from playwright.sync_api import expect

from service import cli
from tests.app.test_equivalence_matrix import readme_example
from tools.stack import Gunicorn

from .test_web_page import ARTIFACTS, browser_context  # noqa: F401 - the shared fixture


@pytest.fixture(scope="module")
def churn_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("web-churn")
    model, frame, argv = readme_example(directory)
    store = directory / "models"
    assert cli.main([*argv, "--store", str(store)]) == 0
    server = Gunicorn(
        directory / "run", store, workers=1, inherit_settings=False,
        env={"PREDICTOR_DEFAULT_MODEL": "churn", "PREDICTOR_LOG_LEVEL": "warning"},
    ).start(timeout=120)  # fmt: skip
    try:
        yield server, model, frame
    finally:
        server.stop()


def test_churn_form_from_the_data(browser_context, churn_server):  # noqa: F811
    server, model, frame = churn_server
    page = browser_context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}/")
    # Opens on the default model, with no ?model= in the URL.
    expect(page.locator("#model-select")).to_have_value("churn")
    expect(page.locator("#model-estimator")).to_contain_text(f"served by {sklearn.__version__}")
    expect(page.locator("#model-estimator")).to_contain_text("trained with scikit-learn")
    # String columns are selects of the categories the encoder learnt from the data.
    plan = page.get_by_label("plan", exact=True)
    expect(plan).to_be_visible()
    options = plan.locator("option").all_inner_texts()
    assert set(frame["plan"].dropna().unique()) <= set(options), options
    # spend had gaps in the data: it may stay empty (sent as null, a missing value).
    row = {"age": 30, "plan": "basic", "spend": None, "region": "us"}
    for name, value in row.items():
        field = page.get_by_label(name, exact=True)
        if value is None:
            continue
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(str(value))
        else:
            field.fill(str(value))
    page.get_by_role("button", name="Predict").click()
    columns = [c for c in frame.columns if c in row]
    expected = model.predict(pd.DataFrame([[row[c] if row[c] is not None else np.nan
                                            for c in columns]], columns=columns))[0]  # fmt: skip
    expect(page.locator("#prediction")).to_have_text(str(expected))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page-churn.png"), full_page=True)
    page.close()
    assert not errors, errors
