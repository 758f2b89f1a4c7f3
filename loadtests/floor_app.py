"""The HTTP floor of the benchmark: a raw WSGI app that reads the body and answers
constant JSON. No framework, no model, no validation: what gunicorn itself costs per
request, the figure every other case is compared with (case (f) of ``make bench``)::

    gunicorn -w 2 -k sync -b 127.0.0.1:8100 loadtests.floor_app:app
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

BODY = b'{"prediction":["setosa"]}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)  # read the body, as any real app must
    start_response("200 OK", HEADERS)
    return [BODY]
