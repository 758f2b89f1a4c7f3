"""Access declared at the view: every route of app.url_map has an access class, and each
class is enforced (public open, API key 401 without a key, admin 401/403)."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from service import auth
from service.app import create_app
from service.auth import Access, access_of, hash_key
from service.settings import Settings

KEY = "k-test-0123456789"
TOKEN = "admin-test-token-0123456789abcdef-0123"
PARAMS = {"name": "iris", "version": "1"}


@pytest.fixture(scope="module")
def app(demo_store) -> Flask:
    settings = Settings(MODEL_STORE=demo_store, API_KEYS=f"t:{hash_key(KEY)}", ADMIN_TOKEN=TOKEN)
    return create_app(settings)


def _calls(app: Flask) -> list[tuple[str, str, str, Access]]:
    """(endpoint, method, concrete URL, declared access) for every route and method."""
    calls = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: PARAMS[m.group(1)], rule.rule)
        level = access_of(app.view_functions[rule.endpoint])
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            calls.append((rule.endpoint, method, url, level))
    return calls


def test_every_endpoint_declares_an_access_class(app):
    undeclared = [e for e, _, _, level in _calls(app) if level not in set(Access)]
    assert not undeclared, f"routes without @auth.public/api_key/admin: {undeclared}"
    used = {level for *_, level in _calls(app)}
    assert used == set(Access)  # each class is in use, so each is enforced below


def test_a_view_without_a_declaration_stops_the_app(demo_store):
    app = create_app(Settings(MODEL_STORE=demo_store), load_models=False)
    app.add_url_rule("/forgotten", "forgotten", lambda: "open?")
    with pytest.raises(RuntimeError, match="forgotten"):
        auth.check_declared(app.view_functions)


def test_each_class_is_enforced_without_credentials(app):
    with app.test_client() as client:
        for endpoint, method, url, level in _calls(app):
            status = client.open(url, method=method, json={}).status_code
            if level is Access.PUBLIC:
                assert status not in (401, 403), (endpoint, url, status)
            else:
                assert status == 401, (endpoint, url, status)


@pytest.mark.parametrize(
    ("headers", "api_key_ok", "admin_ok"),
    [
        ({"Authorization": f"Bearer {KEY}"}, True, False),
        ({"X-API-Key": KEY}, True, False),
        ({"Authorization": f"Bearer {TOKEN}"}, False, True),
        ({"X-API-Key": TOKEN}, False, True),
        ({"Authorization": "Bearer wrong"}, False, False),
    ],
    ids=["key as bearer", "key as X-API-Key", "token as bearer", "token as X-API-Key", "wrong"],
)
def test_one_credential_parser_for_both_classes(app, headers, api_key_ok, admin_ok):
    with app.test_client() as client:
        for endpoint, method, url, level in _calls(app):
            if level is Access.PUBLIC or endpoint == "repository.unload":
                continue  # unloading would change what later calls see
            status = client.open(url, method=method, json={}, headers=headers).status_code
            ok = api_key_ok if level is Access.API_KEY else admin_ok
            if ok:
                assert status not in (401, 403), (endpoint, url, status)
            elif level is Access.API_KEY:
                assert status == 401, (endpoint, url, status)
            else:
                assert status == 403, (endpoint, url, status)  # credentials, but not the token
