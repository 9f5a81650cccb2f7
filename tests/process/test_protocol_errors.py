"""Requests the HTTP parser refuses, sent as raw bytes to a real `convostore serve`: the OpenAI error
body, not aiohttp's text/plain, and one log line, not a traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import orjson
import pytest

from tests.fixtures.sidecar_process import SidecarProcess


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SidecarProcess]:
    process = SidecarProcess(upstream="http://127.0.0.1:9", upstream_api="responses", redis_url="memory://")
    try:
        yield process
    finally:
        process.close()


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):  # the sidecar closes the connection after a refusal
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "says"),
    [
        (b"GET /v1/responses/resp_x HTTP/1.1\r\nHost: a\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", "too long"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", "too long"),
        (b"POST /v1/responses HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", "Content-Length"),
        (b"GARBAGE\r\n\r\n", "not a valid HTTP request"),
    ],
    ids=["long-header", "long-target", "bad-content-length", "not-http"],
)
def test_a_request_the_parser_refuses_gets_the_openai_error_body(
    sidecar: SidecarProcess, request_bytes: bytes, says: str
) -> None:
    status, headers, body = _exchange(sidecar.port, request_bytes)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert says in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert b"aaaa" not in body  # the refused bytes are not echoed back


def test_refusals_log_one_line_without_a_traceback(sidecar: SidecarProcess) -> None:
    _exchange(sidecar.port, b"GARBAGE\r\n\r\n")
    healthz = b"GET /convostore/healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    status, _, _ = _exchange(sidecar.port, healthz)
    assert status == 200  # and the server carries on
    log = sidecar.log_path.read_text()
    assert "refused a malformed request" in log
    assert "Traceback" not in log
