"""service/worker.py's Response against a recording socket: what goes out in which write."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn import util
from gunicorn.http.wsgi import Response as GunicornResponse

from service import worker
from service.worker import SENDING, Response

HEADERS = [("Content-Type", "application/json"), ("X-Model-Version", "1")]


class RecordingSocket:
    """Records every write; ``accept`` caps what one ``send`` takes (a full buffer)."""

    def __init__(self, accept: int | None = None, on_sendall=None) -> None:  # noqa: ANN001
        self.writes: list[tuple[str, bytes]] = []
        self.accept, self.on_sendall = accept, on_sendall

    def send(self, data: bytes, flags: int = 0) -> int:
        assert flags == socket.MSG_DONTWAIT
        taken = bytes(data[: self.accept] if self.accept is not None else data)
        self.writes.append(("send", taken))
        return len(taken)

    def sendall(self, data: bytes) -> None:
        if self.on_sendall:
            self.on_sendall()
        self.writes.append(("sendall", bytes(data)))

    @property
    def wire(self) -> bytes:
        return b"".join(data for _, data in self.writes)


def request(method: str = "POST") -> SimpleNamespace:
    return SimpleNamespace(version=(1, 1), method=method, should_close=lambda: False)


CFG = SimpleNamespace(sendfile=None, is_ssl=False)


@pytest.fixture(autouse=True)
def _fixed_date_and_marks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(util, "http_date", lambda *a: "Tue, 01 Dec 2026 10:00:00 GMT")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(worker, "_stops", None)


def respond(cls: type, sock: RecordingSocket, body: list[bytes], length: int | None,
            method: str = "POST") -> GunicornResponse:  # fmt: skip
    resp = cls(request(method), sock, CFG)
    headers = HEADERS + ([("Content-Length", str(length))] if length is not None else [])
    resp.start_response("200 OK", headers)
    for item in body:
        resp.write(item)
    resp.close()
    return resp


@pytest.mark.parametrize("body", [[b'{"predictions":[1]}'], [b'{"predictions"', b":[1]}", b""]])
def test_whole_response_in_one_send_with_gunicorns_own_bytes(body: list[bytes]) -> None:
    ours, stock = RecordingSocket(), RecordingSocket()
    length = sum(map(len, body))
    respond(Response, ours, body, length)
    respond(GunicornResponse, stock, body, length)
    assert len(stock.writes) >= 2  # gunicorn: the headers, then the body
    assert [kind for kind, _ in ours.writes] == ["send"]
    assert ours.wire == stock.wire
    assert ours.wire.endswith(b'\r\n\r\n{"predictions":[1]}')


@pytest.mark.parametrize("body", [[], [b""]])
def test_empty_body_is_still_answered(body: list[bytes]) -> None:
    """Flask's automatic OPTIONS answer has no body items at all: the headers still go."""
    ours, stock = RecordingSocket(), RecordingSocket()
    respond(Response, ours, body, 0)
    respond(GunicornResponse, stock, body, 0)
    assert len(ours.writes) == 1 and ours.wire == stock.wire
    assert ours.wire.endswith(b"Content-Length: 0\r\n\r\n")


def test_app_failing_before_its_body_is_complete_sends_nothing() -> None:
    sock = RecordingSocket()
    resp = Response(request(), sock, CFG)
    resp.start_response("200 OK", [*HEADERS, ("Content-Length", "20")])
    resp.write(b"half")
    # gunicorn answers a 500 on the connection when nothing was sent yet.
    assert sock.writes == [] and not resp.headers_sent


def test_head_is_one_write_of_the_headers() -> None:
    sock = RecordingSocket()
    respond(Response, sock, [b"ignored"], 7, method="HEAD")
    assert len(sock.writes) == 1 and sock.wire.endswith(b"Content-Length: 7\r\n\r\n")


def marks() -> list[str]:
    return sorted(p.name for p in SENDING.directory.glob("sending-*"))


def test_part_taken_by_the_kernel_is_marked_until_the_rest_is_sent() -> None:
    seen_during: list[list[str]] = []
    sock = RecordingSocket(accept=100, on_sendall=lambda: seen_during.append(marks()))
    respond(Response, sock, [b"x" * 1000], 1000)
    assert [kind for kind, _ in sock.writes] == ["send", "sendall"]
    assert sock.wire.endswith(b"x" * 1000)
    assert seen_during == [[f"sending-{os.getpid()}-{threading.get_ident()}"]]
    assert marks() == []


def test_streamed_response_is_marked_until_closed() -> None:
    sock = RecordingSocket()
    resp = Response(request(), sock, CFG)
    resp.start_response("200 OK", HEADERS)  # no Content-Length: chunked, streamed
    resp.write(b"part")
    assert len(marks()) == 1
    assert SENDING.cut_short(os.getpid()) == [(None, 0)]  # what the master finds if it dies
    resp.close()
    assert marks() == [] and sock.wire.endswith(b"0\r\n\r\n")


def test_master_finds_what_a_dead_worker_was_sending() -> None:
    SENDING.begin(1000, 100)
    assert SENDING.cut_short(os.getpid()) == [(1000, 100)]
    assert SENDING.cut_short(os.getpid()) == []  # counted once
    SENDING.end()
