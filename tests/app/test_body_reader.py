"""One body reader for every route: gzip/deflate accepted everywhere, with the same
limit on the body as sent and on what it inflates to (413 over it)."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest

from service.app import create_app
from service.settings import Settings

from ..conftest import IRIS_ROW

LIMIT = 4096
TOKEN = "body-reader-admin-token-0123456789ab"  # 32+ bytes
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
V2 = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}]}
ROUTES = [
    ("/predict", {"input": IRIS_ROW}, {}, "prediction"),
    ("/v1/models/iris:predict", {"instances": [IRIS_ROW]}, {}, "predictions"),
    ("/v2/models/iris/infer", V2, {}, "outputs"),
    ("/v2/repository/index", {"ready": True}, ADMIN, None),
]
ENCODERS = {"gzip": gzip.compress, "deflate": zlib.compress}


@pytest.fixture(scope="module")
def client(demo_store):
    settings = Settings(MODEL_STORE=demo_store, MAX_BODY_BYTES=LIMIT, ADMIN_TOKEN=TOKEN)
    with create_app(settings).test_client() as c:
        yield c


def _post(client, url, data, headers):
    return client.post(url, data=data, headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize("encoding", ENCODERS)
@pytest.mark.parametrize(("url", "body", "headers", "key"), ROUTES, ids=[r[0] for r in ROUTES])
def test_compressed_bodies_answer_like_plain_ones(client, url, body, headers, key, encoding):
    plain = _post(client, url, orjson.dumps(body), headers)
    packed = _post(
        client,
        url,
        ENCODERS[encoding](orjson.dumps(body)),
        {**headers, "Content-Encoding": encoding},
    )
    assert plain.status_code == packed.status_code == 200, packed.get_data(as_text=True)
    if key is not None:
        assert packed.get_json()[key] == plain.get_json()[key]
    else:
        assert packed.get_json() == plain.get_json()


def _message(response) -> str:
    error = response.get_json()["error"]
    return error if isinstance(error, str) else error["message"]


@pytest.mark.parametrize(("url", "body", "headers", "key"), ROUTES, ids=[r[0] for r in ROUTES])
def test_the_same_limit_everywhere(client, url, body, headers, key):
    too_big = _post(client, url, b" " * (LIMIT + 1), headers)
    assert too_big.status_code == 413 and "exceeds the limit of 4096" in _message(too_big)
    # 40 bytes on the wire, 1 MB inflated: refused without inflating it all.
    bomb = gzip.compress(b" " * 1_000_000)
    assert len(bomb) < LIMIT
    inflated = _post(client, url, bomb, {**headers, "Content-Encoding": "gzip"})
    assert inflated.status_code == 413 and "inflates past the limit of 4096" in _message(inflated)
    broken = _post(client, url, b"not gzip", {**headers, "Content-Encoding": "gzip"})
    assert broken.status_code == 400 and "not valid gzip" in _message(broken)
    other = _post(client, url, b"{}", {**headers, "Content-Encoding": "br"})
    assert other.status_code == 415 and "br is not supported" in _message(other)
