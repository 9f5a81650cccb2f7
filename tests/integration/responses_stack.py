"""The fake engine, the sidecar in front of it, and an `openai.AsyncOpenAI` client whose every exchange
with the sidecar is recorded and checked against the Open Responses models (tests/conformance.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx  # the openai SDK this project pins is built on httpx2
import openai
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from sidecar.appkeys import STORE
from sidecar.store import MemoryStore
from sidecar.wire.sse import SSEDecoder
from tests.conformance import assert_event_sequence, assert_response_resource
from tests.fixtures.fake_engine import create_fake_engine
from tests.integration.conftest import store_backend

Client = TestClient[Any, Any]
JSON = dict[str, Any]

STATE_HEADERS = (
    "X-Response-Id",
    "X-Conversation-Id",
    "X-Conversation-Version",
    "X-Prefix-Fingerprint",
    "X-Estimated-Input-Tokens",
    "X-Request-Id",
)
ENGINE_PATHS = {"responses": "/v1/responses", "chat": "/v1/chat/completions"}


def parse_sse(raw: bytes) -> list[JSON]:
    """Every event of an SSE body, checking the `event:` line names the JSON's `type`."""
    decoder = SSEDecoder()
    events = []
    for message in [*decoder.feed(raw), *decoder.flush()]:
        event = orjson.loads(message.data)
        assert message.event == event["type"], f"event: {message.event!r} carries type {event['type']!r}"
        events.append(event)
    return events


@dataclass
class Exchange:
    """One call of the SDK to the sidecar, with the body it got back."""

    method: str
    path: str
    request_body: bytes
    status: int
    content_type: str
    body: bytes = b""

    @property
    def request_json(self) -> Any:
        return orjson.loads(self.request_body)

    @property
    def events(self) -> list[JSON]:
        return parse_sse(self.body)

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class _Tee(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._exchange.body += chunk
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordingTransport(httpx.AsyncHTTPTransport):
    """Keeps a copy of every body the sidecar sends the SDK, as the SDK reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        exchange = Exchange(
            request.method,
            request.url.path,
            request.content,
            response.status_code,
            response.headers.get("content-type", ""),
        )
        self.exchanges.append(exchange)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Tee(response.stream, exchange)
        return response


def check_exchange(exchange: Exchange) -> None:
    """A response object must be a complete ResponseResource; a stream a complete, coherent event sequence."""
    if not exchange.path.startswith("/v1/responses") or exchange.status != 200:
        return
    if exchange.content_type.startswith("text/event-stream"):
        assert_event_sequence(exchange.events)
    elif exchange.method in ("GET", "POST") and not exchange.path.endswith("/input_items"):
        assert_response_resource(exchange.json)


@dataclass
class Stack:
    api: str  # what the engine speaks: "responses" or "chat"
    engine: Client
    sidecar: Client
    client: openai.AsyncOpenAI
    transport: RecordingTransport
    redis_url: str | None
    checked: int = 0  # exchanges already validated

    async def set_mode(self, mode: str, **settings: Any) -> None:
        """Switch the engine's mode for every following request (`PUT /_fake/mode`)."""
        resp = await self.engine.put("/_fake/mode", json={"mode": mode, **settings})
        assert resp.status == 200, await resp.text()

    async def engine_bodies(self) -> list[JSON]:
        """The bodies of the generation requests the engine received, oldest first."""
        resp = await self.engine.get("/_fake/requests", params={"path": ENGINE_PATHS[self.api]})
        return [r["body"] for r in await resp.json()]

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        """A GET on the sidecar; a stored response object it returns is checked like the SDK's."""
        resp = await self.sidecar.get(path, params=params)
        body = await resp.json()
        if resp.status == 200 and re.fullmatch(r"/v1/responses/[^/]+", path):
            assert_response_resource(body)
        return resp.status, body

    async def stored_count(self) -> int:
        """How much the store holds (test-only peek): keys in Redis, or entries of the memory store."""
        if self.redis_url is None:
            store = store_backend(self.sidecar.app[STORE])  # under the metrics and alias wrappers
            assert isinstance(store, MemoryStore)
            return len(store._responses) + len(store._conversations)
        db = aioredis.from_url(self.redis_url)
        try:
            return int(await db.dbsize())
        finally:
            await db.aclose()

    def sent(self, path: str = "/v1/responses") -> list[JSON]:
        """The bodies the SDK POSTed to `path` of the sidecar, oldest first."""
        return [e.request_json for e in self.transport.exchanges if e.method == "POST" and e.path == path]

    def check_conformance(self) -> int:
        """Validate every exchange not yet checked; return how many streams and objects there were."""
        new = self.transport.exchanges[self.checked :]
        for exchange in new:
            check_exchange(exchange)
        self.checked = len(self.transport.exchanges)
        return len(new)


COMBOS = [("responses", "memory"), ("responses", "redis"), ("chat", "memory"), ("chat", "redis")]


@pytest.fixture(params=COMBOS, ids=[f"{api}-{store}" for api, store in COMBOS])
async def stack(request: pytest.FixtureRequest, make_sidecar: Callable[..., Any]) -> AsyncIterator[Stack]:
    """A fresh fake engine (mode ok) behind the sidecar, per engine API and store backend. Every exchange the
    SDK had is checked for conformance when the test ends."""
    api, store = request.param
    redis_url = None
    if store == "redis":
        server = request.getfixturevalue("redis_server")
        # The server is the session's: stored_count() must not see an earlier test's keys lapse meanwhile.
        server.flushall()
        redis_url = server.url
    engine = TestClient(TestServer(create_fake_engine(deltas=4, delay=0.05)))
    await engine.start_server()
    sidecar = await make_sidecar(
        upstream=str(engine.make_url("")).rstrip("/"), upstream_api=api, redis_url=redis_url or "memory://"
    )
    transport = RecordingTransport()
    client = openai.AsyncOpenAI(
        api_key="sk-test",
        base_url=str(sidecar.make_url("/v1")),
        http_client=httpx.AsyncClient(transport=transport),
        max_retries=0,
    )
    stack = Stack(api, engine, sidecar, client, transport, redis_url)
    try:
        yield stack
        stack.check_conformance()
    finally:
        await client.close()
        await engine.close()


# --------------------------------------------------------------------------------------------------
# what the engine received, in one shape for both engine APIs


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def engine_view(api: str, body: JSON) -> tuple[str | None, list[tuple[str, ...]]]:
    """(instructions, history) of one engine request: messages as (role, text), calls as
    ("function_call", call_id, name, arguments) and outputs as ("function_call_output", call_id, output)."""
    history: list[tuple[str, ...]] = []
    if api == "responses":
        instructions = body.get("instructions")
        for item in body["input"]:
            kind = item.get("type", "message")
            if kind == "message":
                history.append((item["role"], _text(item["content"])))
            elif kind == "function_call":
                history.append(
                    ("function_call", item["call_id"], item["name"], _canonical(item["arguments"]))
                )
            elif kind == "function_call_output":
                history.append(("function_call_output", item["call_id"], _text(item["output"])))
            else:
                history.append((kind,))
        return instructions, history
    messages = list(body["messages"])
    instructions = None
    if messages and messages[0]["role"] == "system":
        instructions = messages.pop(0)["content"]
    for message in messages:
        if message["role"] == "tool":
            history.append(("function_call_output", message["tool_call_id"], _text(message["content"])))
            continue
        if message.get("content") is not None:
            history.append((message["role"], _text(message["content"])))
        for call in message.get("tool_calls") or []:
            fn = call["function"]
            history.append(("function_call", call["id"], fn["name"], _canonical(fn["arguments"])))
    return instructions, history


def _canonical(arguments: str) -> str:
    return orjson.dumps(orjson.loads(arguments), option=orjson.OPT_SORT_KEYS).decode()
