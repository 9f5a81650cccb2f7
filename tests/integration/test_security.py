"""Security from outside: path tricks, credentials, body limits, hop-by-hop headers, slow and gone clients.

Requests are written to the socket byte for byte (curl --path-as-is), so no client normalises a path before
the sidecar sees it; every test checks what the engine received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sidecar.app import create_app
from sidecar.config import Config
from tests.fixtures.fake_engine import recorded
from tests.fixtures.redis_servers import RedisServer, free_port, spawn_process, stop_process

ENGINE_KEY = "sk-engine-only"
AUTH_MODES = ("api_keys", "trusted_header")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def exchange(port: int, head: str, body: bytes = b"", *, timeout: float = 10.0) -> Answer:
    """Send `head` (request line and headers, CRLF-separated, without the blank line) and `body` exactly as
    given on a fresh connection, and read the whole answer (`Connection: close` is added, and Content-Length
    for a body that states no framing)."""
    if body and not re.search(r"(?im)^(content-length|transfer-encoding):", head):
        head += f"\r\nContent-Length: {len(body)}"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1") + b"\r\nConnection: close\r\n\r\n" + body)
        # Not up to EOF: after answering a request whose body it did not read, aiohttp lingers reading it.
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = re.search(rb"(?im)^content-length: *(\d+)", raw)
        if head.startswith("HEAD "):
            pass
        elif length is not None:
            raw += await asyncio.wait_for(reader.readexactly(int(length[1])), timeout)
        else:
            raw += await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return parse_answer(raw)


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return Answer(int(status_line.split()[1]), headers, body)


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def chunked(payload: bytes, piece: int = 4096) -> bytes:
    parts = [payload[i : i + piece] for i in range(0, len(payload), piece)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text("tenants:\n  acme:\n    api_keys: [sk-acme]\n")
    return str(path)


def credentials(mode: str) -> str:
    return "Authorization: Bearer sk-acme" if mode == "api_keys" else "X-Tenant-Id: acme"


@pytest.fixture
async def secured(
    request: pytest.FixtureRequest, make_sidecar: Any, engine: TestServer, policy: str
) -> TestClient[Any, Any]:
    """The sidecar in the auth mode given by indirect parametrisation, in front of the fake engine, holding
    the engine's own key (the worst case: a bypass would even authenticate to the engine)."""
    return await make_sidecar(
        redis_url="memory://",
        auth=request.param,
        config_path=policy,
        upstream=str(engine.make_url("")).rstrip("/"),
        upstream_api_key=ENGINE_KEY,
        max_body_bytes=1000,
    )


# --------------------------------------------------------------------------------------------------
# 13: no path reaches the engine without authentication

MALFORMED_TARGETS = [
    ("POST", "/convostore/../v1/responses"),
    ("GET", "/convostore/%2e%2e/v1/models"),
    ("GET", "/convostore/%2E%2E/v1/models"),
    ("GET", "/convostore/.%2e/v1/models"),
    ("GET", "/convostore/%2e./v1/models"),
    ("POST", "/%63onvostore/../v1/responses"),
    ("POST", "/convostore/x/../../v1/completions"),
    ("GET", "/convostore/./../v1/models"),
    ("GET", "/convostore/healthz/../../v1/models"),
    ("GET", "/convostore/healthz/.."),
    ("GET", "/v1/./models"),
    ("GET", "/convostore%2f..%2fv1/models"),
    ("GET", "/convostore%2F..%2Fv1/models"),
    ("GET", "/convostore/..%5cv1/models"),
    ("GET", "/convostore\\..\\v1\\models"),
    ("GET", "http://127.0.0.1/v1/models"),
    ("GET", "http://127.0.0.1/convostore/../v1/models"),
    ("GET", "http://evil.example/convostore/healthz"),
]
UNKNOWN_OWN_PATHS = [
    ("GET", "/convostore/foo"),
    ("POST", "/convostore/foo"),
    ("POST", "/convostore/healthz"),  # the route exists for GET only
    ("GET", "/convostore/healthz/"),
    ("GET", "/convostore//healthz"),
    ("GET", "/convostore/metrics/x"),
    ("GET", "/v1/models"),
]


@pytest.mark.parametrize("secured", AUTH_MODES, indirect=True)
@pytest.mark.parametrize(("method", "target"), MALFORMED_TARGETS)
async def test_path_tricks_are_refused_before_routing(
    secured: TestClient[Any, Any], engine: TestServer, method: str, target: str
) -> None:
    for with_credentials in (False, True):
        head = f"{method} {target} HTTP/1.1\r\nHost: sidecar"
        if with_credentials:
            head += "\r\nAuthorization: Bearer sk-acme\r\nX-Tenant-Id: acme"
        answer = await exchange(secured.server.port, head, b"{}" if method == "POST" else b"")
        assert answer.status == 400, (target, answer)
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request_target"
    assert recorded(engine.app) == []


@pytest.mark.parametrize("secured", AUTH_MODES, indirect=True)
@pytest.mark.parametrize(("method", "target"), UNKNOWN_OWN_PATHS)
async def test_only_the_exact_ops_routes_skip_authentication(
    secured: TestClient[Any, Any], engine: TestServer, method: str, target: str
) -> None:
    answer = await exchange(secured.server.port, f"{method} {target} HTTP/1.1\r\nHost: sidecar")
    assert answer.status == 401, (target, answer)
    assert answer.json()["error"]["code"] in ("missing_api_key", "missing_tenant")
    assert recorded(engine.app) == []


@pytest.mark.parametrize("secured", AUTH_MODES, indirect=True)
async def test_ops_routes_answer_without_credentials_and_never_reach_the_engine(
    secured: TestClient[Any, Any], engine: TestServer
) -> None:
    for target in ("/convostore/healthz", "/convostore/metrics", "/%63onvostore/healthz"):
        answer = await exchange(secured.server.port, f"GET {target} HTTP/1.1\r\nHost: sidecar")
        assert answer.status == 200, target
    assert (await exchange(secured.server.port, "HEAD /convostore/healthz HTTP/1.1\r\nHost: s")).status == 200
    assert recorded(engine.app) == []


@pytest.mark.parametrize("secured", AUTH_MODES, indirect=True)
async def test_authenticated_pass_through_forwards_the_exact_target(
    secured: TestClient[Any, Any], engine: TestServer, request: pytest.FixtureRequest
) -> None:
    mode = request.node.callspec.params["secured"]
    head = f"GET /v1/models?q=a%2Fb&x=../y HTTP/1.1\r\nHost: sidecar\r\n{credentials(mode)}"
    answer = await exchange(secured.server.port, head)
    assert answer.status == 200 and answer.json()["object"] == "list"
    own = await exchange(
        secured.server.port, f"GET /convostore/foo HTTP/1.1\r\nHost: s\r\n{credentials(mode)}"
    )
    # Authenticated, a route that is not an inference route is not the engine's either (docs/api.md §9).
    assert own.status == 404 and own.json()["error"]["code"] == "unknown_url"
    [models] = recorded(engine.app)
    assert models["path"] == "/v1/models"
    assert models["headers"]["Authorization"] == f"Bearer {ENGINE_KEY}"


async def test_raw_target_reaches_the_engine_byte_for_byte(make_sidecar: Any) -> None:
    async with raw_engine() as engine:
        sidecar = await make_sidecar(redis_url="memory://", upstream=engine.url)
        answer = await exchange(sidecar.server.port, "GET /v1/%6Dodels/a%20b?q=%41 HTTP/1.1\r\nHost: s")
        assert answer.status == 200
        assert engine.requests[0].startswith(b"GET /v1/%6Dodels/a%20b?q=%41 HTTP/1.1\r\n")


async def test_path_tricks_are_refused_without_auth_too(make_sidecar: Any, engine: TestServer) -> None:
    sidecar = await make_sidecar(redis_url="memory://", upstream=str(engine.make_url("")).rstrip("/"))
    for method, target in MALFORMED_TARGETS:
        answer = await exchange(sidecar.server.port, f"{method} {target} HTTP/1.1\r\nHost: s")
        assert answer.status == 400, target
    assert recorded(engine.app) == []


# --------------------------------------------------------------------------------------------------
# 14: credentials never shown


async def test_readyz_never_shows_the_engines_credentials(make_sidecar: Any, caplog: Any) -> None:
    sidecar = await make_sidecar(redis_url="memory://", upstream="http://admin:s3cr3t-up@127.0.0.1:9")
    with caplog.at_level(logging.DEBUG):
        resp = await sidecar.get("/convostore/readyz")
        body = await resp.text()
    assert resp.status == 503 and "127.0.0.1:9" in body
    assert "s3cr3t-up" not in body and "s3cr3t-up" not in caplog.text


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", "--listen", f"127.0.0.1:{free_port()}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_start_up_errors_never_print_a_redis_password() -> None:
    # An unreachable Redis no longer stops start-up: tests/process/test_startup.py checks its warning line
    # and readyz for the password.
    result = run_cli("--redis-url", "mysql://root:s3cr3t-pw@db:3306")
    assert result.returncode == 2 and "REDIS_URL" in result.stderr
    assert "s3cr3t-pw" not in result.stderr + result.stdout

    result = run_cli(env={"CONVOSTORE_UPSTREAM": "ftp://user:s3cr3t-pw@engine"})
    assert result.returncode == 2 and "CONVOSTORE_UPSTREAM" in result.stderr
    assert "s3cr3t-pw" not in result.stderr + result.stdout


# --------------------------------------------------------------------------------------------------
# 15: the body limit holds on every route


@pytest.mark.parametrize("secured", ["api_keys"], indirect=True)
@pytest.mark.parametrize("encoding", ["content-length", "chunked"])
@pytest.mark.parametrize(
    "target", ["/v1/embeddings", "/v1/completions", "/v1/responses", "/v1/sessions/c1/append"]
)
async def test_oversized_bodies_get_413_and_never_reach_the_engine(
    secured: TestClient[Any, Any], engine: TestServer, encoding: str, target: str
) -> None:
    payload = orjson.dumps({"model": "m", "input": "x" * 100_000})
    head = f"POST {target} HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer sk-acme"
    if encoding == "chunked":
        answer = await exchange(
            secured.server.port, head + "\r\nTransfer-Encoding: chunked", chunked(payload)
        )
    else:
        answer = await exchange(secured.server.port, head + f"\r\nContent-Length: {len(payload)}", payload)
    assert answer.status == 413, answer
    assert answer.json()["error"]["code"] == "request_too_large"
    await asyncio.sleep(0.2)  # an upload the engine was still receiving would be recorded by now
    assert recorded(engine.app) == []


@pytest.mark.parametrize("secured", ["api_keys"], indirect=True)
async def test_bodies_within_the_limit_still_stream_through(
    secured: TestClient[Any, Any], engine: TestServer
) -> None:
    payload = orjson.dumps({"model": "m", "input": "y" * 900})
    head = "POST /v1/embeddings HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer sk-acme"
    head += "\r\nTransfer-Encoding: chunked"
    answer = await exchange(secured.server.port, head, chunked(payload, piece=100))
    assert answer.status == 200
    assert recorded(engine.app)[0]["body"] == orjson.loads(payload)


# --------------------------------------------------------------------------------------------------
# 16: hop-by-hop and client-only headers, JSON depth, departing and slow clients, Redis auth, request ids


async def test_headers_named_in_connection_are_not_forwarded_either_way(make_sidecar: Any) -> None:
    async with raw_engine(
        b"Connection: X-Engine-Hop\r\nX-Engine-Hop: secret\r\nX-Engine-Kept: 1\r\n"
    ) as engine:
        sidecar = await make_sidecar(redis_url="memory://", upstream=engine.url)
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.server.port)
        writer.write(
            b"GET /v1/models HTTP/1.1\r\nHost: s\r\nConnection: keep-alive, X-Client-Hop\r\n"
            b"X-Client-Hop: secret\r\nX-Client-Kept: 1\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
    answer = parse_answer(head)
    assert answer.status == 200
    assert "x-engine-hop" not in answer.headers and answer.headers["x-engine-kept"] == "1"
    sent = engine.requests[0].lower()
    assert b"x-client-hop" not in sent and b"x-client-kept: 1" in sent


@pytest.mark.parametrize(
    ("mode", "forwarded"),
    [("api_keys", set()), ("trusted_header", {"x-tenant-id"}), ("none", {"x-tenant-id", "cookie"})],
)
async def test_client_credentials_stay_with_the_sidecar(
    make_sidecar: Any, engine: TestServer, policy: str, mode: str, forwarded: set[str]
) -> None:
    sidecar = await make_sidecar(
        redis_url="memory://", auth=mode, config_path=policy, upstream=str(engine.make_url("")).rstrip("/")
    )
    headers = {"Authorization": "Bearer sk-acme", "X-Tenant-Id": "acme", "Cookie": "session=abc"}
    assert (await sidecar.get("/v1/models", headers=headers)).status == 200
    sent = {name.lower() for name in recorded(engine.app)[0]["headers"]}
    assert sent & {"x-tenant-id", "cookie"} == forwarded
    assert ("authorization" in sent) == (mode == "none")


def nested(depth: int) -> bytes:
    """`depth` levels of JSON arrays, written by hand: orjson itself refuses to write more than 254."""
    return b"[" * (depth - 1) + b'"x"' + b"]" * (depth - 1)


@pytest.mark.parametrize("depth", [200, 255, 300, 1000, 1100])
@pytest.mark.parametrize("target", ["/v1/responses", "/v1/sessions/c1/append", "/v1/conversations"])
async def test_deep_json_is_a_400_not_a_500(
    make_sidecar: Any, engine: TestServer, depth: int, target: str
) -> None:
    sidecar = await make_sidecar(redis_url="memory://", upstream=str(engine.make_url("")).rstrip("/"))
    deep = nested(depth)
    body = b'{"model":"m","role":"user","input":%s,"content":%s,"metadata":{"k":%s}}' % (deep, deep, deep)
    resp = await sidecar.post(target, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert recorded(engine.app) == []


@contextlib.asynccontextmanager
async def served(**settings: Any) -> AsyncIterator[int]:
    """The app served as `convostore serve` serves it (aiohttp's TestServer cancels handlers when a client
    leaves, which production does not), on a free port."""
    runner = web.AppRunner(
        create_app(Config.from_env({}, upstream_api="responses", **settings)), access_log=None
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("target", ["/v1/sessions/c1/append", "/v1/embeddings"])
async def test_a_client_leaving_mid_body_is_not_an_error(
    engine: TestServer, caplog: Any, target: str
) -> None:
    upstream = str(engine.make_url("")).rstrip("/")
    with caplog.at_level(logging.DEBUG):
        async with served(redis_url="memory://", upstream=upstream) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f'POST {target} HTTP/1.1\r\nHost: s\r\nContent-Length: 1000\r\n\r\n{{"ro'.encode())
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            metrics = b""
            for _ in range(50):
                metrics = (await exchange(port, "GET /convostore/metrics HTTP/1.1\r\nHost: s")).body
                if b'status="499"' in metrics:
                    break
                await asyncio.sleep(0.05)
    assert re.search(rb'convostore_requests_total\{route="[^"]+",status="499"\} 1\.0', metrics), metrics
    assert b'status="500"' not in metrics
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert recorded(engine.app) == []


async def test_a_slow_body_gets_408(make_sidecar: Any, engine: TestServer) -> None:
    sidecar = await make_sidecar(
        redis_url="memory://", upstream=str(engine.make_url("")).rstrip("/"), client_timeout_seconds=0.5
    )
    for target in ("/v1/sessions/c1/append", "/v1/embeddings"):
        started = time.monotonic()
        head = f"POST {target} HTTP/1.1\r\nHost: s\r\nContent-Length: 100"
        answer = await exchange(sidecar.server.port, head, b'{"role"', timeout=5)
        assert answer.status == 408 and answer.json()["error"]["code"] == "request_timeout"
        assert time.monotonic() - started < 3
    assert recorded(engine.app) == []


@pytest.mark.parametrize("secured", ["trusted_header"], indirect=True)
async def test_duplicate_tenant_headers_are_refused(
    secured: TestClient[Any, Any], engine: TestServer
) -> None:
    for target in ("/v1/models", "/v1/sessions/c1"):
        head = f"GET {target} HTTP/1.1\r\nHost: s\r\nX-Tenant-Id: acme\r\nX-Tenant-Id: globex"
        answer = await exchange(secured.server.port, head)
        assert answer.status == 400 and answer.json()["error"]["param"] == "X-Tenant-Id"
    assert recorded(engine.app) == []


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("/v1/sessions/c1%0A/append", b'{"items": [{"type": "message", "role": "user", "content": "hi"}]}'),
        ("/v1/sessions/c1%0A/trim", b"{}"),
        ("/v1/responses", b'{"model": "m", "input": "hi", "conversation": "c1\\n"}'),
        ("/v1/sessions/resolve?conversation_id=c1%0A", b""),
    ],
)
async def test_an_id_ending_in_a_newline_is_refused_before_anything_is_stored(
    sidecar: TestClient[Any, Any], target: str, body: bytes
) -> None:
    """Ids are parts of keys, records and response headers. `$` matches before a final newline: such an
    id passed, was written, then broke the answer's headers (no answer came) and the records' fields."""
    head = f"{'POST' if body else 'GET'} {target} HTTP/1.1\r\nHost: s\r\nContent-Type: application/json"
    answer = await exchange(sidecar.server.port, head, body)
    assert answer.status == 400, answer.body
    assert answer.json()["error"]["code"] == "invalid_id"
    stored = await exchange(sidecar.server.port, "GET /v1/sessions/c1%0A HTTP/1.1\r\nHost: s")
    assert stored.status == 400 and stored.json()["error"]["code"] == "invalid_id"


@pytest.mark.parametrize("secured", ["api_keys"], indirect=True)
async def test_header_bytes_that_are_not_utf8_are_a_4xx_not_a_500(
    secured: TestClient[Any, Any], engine: TestServer
) -> None:
    # exchange() sends the head as latin-1: these characters go out as the bytes 0xff 0xfe
    key = await exchange(
        secured.server.port, "GET /v1/models HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer \xff\xfe"
    )
    assert key.status == 401 and key.json()["error"]["code"] == "invalid_api_key"
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: s\r\n{credentials('api_keys')}\r\nIdempotency-Key: k\xff\xfe"
    )
    keyed = await exchange(secured.server.port, head, b'{"model": "m", "input": "hi"}')
    assert keyed.status == 400 and keyed.json()["error"]["param"] == "Idempotency-Key"
    assert recorded(engine.app) == []


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123:x.y_z", True), ("a" * 128, True), ("a" * 129, False), ("x y", False), ("<script>", False)],
)
async def test_client_request_ids_are_bounded(make_sidecar: Any, sent: str, kept: bool) -> None:
    sidecar = await make_sidecar(redis_url="memory://")
    resp = await sidecar.get("/convostore/healthz", headers={"X-Request-Id": sent})
    echoed = resp.headers["X-Request-Id"]
    assert (echoed == sent) == kept
    if not kept:
        assert re.fullmatch(r"req_[0-9a-f]{24}", echoed)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own: its password is changed under the sidecar."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("initial_password", [None, "first-pw"])
async def test_redis_refusing_credentials_at_run_time_is_503(
    make_sidecar: Any, private_redis: RedisServer, initial_password: str | None
) -> None:
    admin = redis.Redis(port=private_redis.port)
    url = private_redis.url
    if initial_password:
        admin.config_set("requirepass", initial_password)
        admin = redis.Redis(port=private_redis.port, password=initial_password)
        url = f"redis://:{initial_password}@127.0.0.1:{private_redis.port}/0"
    sidecar = await make_sidecar(redis_url=url)
    message = {"role": "user", "content": "hi"}
    assert (await sidecar.post("/v1/sessions/c1/append", json=message)).status == 200
    admin.config_set("requirepass", "rotated-pw")  # NOAUTH without a password, WRONGPASS with the old one
    admin = redis.Redis(port=private_redis.port, password="rotated-pw")
    admin.client_kill_filter(_type="normal", skipme=True)
    try:
        for _ in range(3):
            resp = await sidecar.post("/v1/sessions/c1/append", json=message)
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "store_unavailable"
        ready = await sidecar.get("/convostore/readyz")
        assert ready.status == 503 and "rotated-pw" not in await ready.text()
    finally:
        admin.close()


# --------------------------------------------------------------------------------------------------
# a slow client's headers: aiohttp's keep-alive timer, wired from the setting by `convostore serve`


def test_slow_headers_are_cut_off_by_the_serving_process(tmp_path: Path) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--client-timeout-seconds",
        "1",
    ]
    proc = spawn_process(argv, log_path=tmp_path / "sidecar.log")
    try:
        wait_healthy(port, proc)
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /convostore/healthz HTTP/1.1\r\nHost: s\r\n")  # the blank line never comes
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the sidecar, not answered
            assert time.monotonic() - started < 5
    finally:
        stop_process(proc)


def wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "convostore exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/convostore/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("convostore did not become healthy")


# --------------------------------------------------------------------------------------------------
# an engine that answers one fixed response and keeps the exact bytes of every request


@dataclass
class RawEngine:
    url: str = ""
    requests: list[bytes] = field(default_factory=list)


class raw_engine:  # used as `async with raw_engine(...) as engine`
    def __init__(self, extra_headers: bytes = b"") -> None:
        self._extra = extra_headers
        self._engine = RawEngine()
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()
            return
        self._engine.requests.append(head)
        body = b'{"object":"list","data":[]}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), self._extra, body)
        )
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> RawEngine:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self._engine.url = f"http://127.0.0.1:{port}"
        return self._engine

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
