"""Sends fuzzed requests to an in-process sidecar (with the fake engine behind it) and judges each answer.

Used by tests/fuzz/test_fuzz_routes.py (a short slice) and `python -m bench fuzz` (the full count). The
sidecar runs in trusted_header mode with two tenants, on `memory://` or a real redis-server, on an event
loop of its own, so hypothesis drives it from plain synchronous code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.test_utils import TestServer
from jsonschema_rs import Draft202012Validator  # schemathesis's validator: no second dependency
from yarl import URL

from sidecar.api_schema import OPERATIONS
from sidecar.app import create_app
from sidecar.appkeys import STORE
from sidecar.config import Config
from sidecar.ids import is_client_id
from sidecar.store.memory import MemoryStore
from tests.fixtures.fake_engine import create_fake_engine
from tests.fixtures.redis_servers import redis_call
from tests.integration.conftest import store_backend

from .bad_requests import CLIENT_CONVERSATIONS, MAX_BODY_BYTES, TENANTS, FuzzRequest, Raw, Ref
from .model import StoreModel, input_count, messages_count, store_response_count

ERROR_FIELDS = {"message", "type", "param", "code"}
# 400s about the body as a whole, where no one field is to blame.
WHOLE_BODY_CODES = frozenset({"invalid_json", "invalid_request_target", "request_timeout"})
_META_KEY = re.compile(r"^cs:\{[0-9a-f]+\}:([^:]+):([^:]+):meta$")


class FuzzFailure(AssertionError):
    pass


@dataclass
class RouteTally:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0


@dataclass
class Sent:
    request: FuzzRequest
    url: str
    headers: dict[str, str]
    body: bytes | None
    json: Any  # the body as the sidecar parsed it, when it is JSON


class FuzzTarget:
    """One sidecar + fake engine on a private event loop; `send` a batch, then `mismatches()`."""

    def __init__(self, redis_url: str = "memory://", *, fail_fast: bool = True) -> None:
        self.redis_url = redis_url
        self.fail_fast = fail_fast
        self.model = StoreModel()
        self.tally: dict[str, RouteTally] = {}
        self.failures: list[str] = []
        self.journal: list[str] = []  # accepted requests, oldest first: the context of a failure
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.engine = TestServer(create_fake_engine(record=False, delay=0.0, deltas=2))
        await self.engine.start_server()
        config = Config.from_env(
            {},
            upstream=str(self.engine.make_url("")).rstrip("/"),
            upstream_api="responses",
            redis_url=self.redis_url,
            auth="trusted_header",
            max_body_bytes=MAX_BODY_BYTES,
        )
        # A compaction key, so compact answers and the compaction items it mints are checked in input.
        compaction = {"key": "fuzz-compaction-key-32-bytes-long"}
        config = dataclasses.replace(config, policy={"compaction": compaction})
        self.app = create_app(config)
        self.server = TestServer(self.app)
        await self.server.start_server()
        self.session = aiohttp.ClientSession(str(self.server.make_url("")))

    def close(self) -> None:
        async def stop() -> None:
            await self.session.close()
            await self.server.close()
            await self.engine.close()

        self.loop.run_until_complete(stop())
        self.loop.close()

    def __enter__(self) -> FuzzTarget:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- sending -------------------------------------------------------------------------------------

    def send(self, batch: list[FuzzRequest]) -> None:
        self.loop.run_until_complete(self._send_all(batch))

    async def _send_all(self, batch: list[FuzzRequest]) -> None:
        for request in batch:
            await self._send(request)

    def _prepare(self, request: FuzzRequest) -> Sent:
        tenant = request.tenant

        def text(value: str | Ref) -> str:
            return self.model.resolve(value, tenant) if isinstance(value, Ref) else value

        path = "/" + "/".join(quote(_routable(text(p)), safe="") for p in request.path)
        if request.query:
            path += "?" + "&".join(f"{quote(k)}={quote(text(v)[:1000], safe='')}" for k, v in request.query)
        headers = {name: _header_safe(text(value)) for name, value in request.headers.items()}
        if tenant is not None:
            headers["X-Tenant-Id"] = _header_safe(tenant)
        if request.route == "POST /v1/chat/completions" and not (
            headers.get("X-Conversation-Id", "").strip() or headers.get("X-Previous-Response-Id", "").strip()
        ):
            # Without either header the call is the engine's pass-through, not the stateful route.
            headers["X-Conversation-Id"] = CLIENT_CONVERSATIONS[0]
        body, parsed = self._encode(request.body, tenant)
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        return Sent(request, path, headers, body, parsed)

    def _encode(self, body: Any, tenant: str | None) -> tuple[bytes | None, Any]:
        if body is None:
            return None, None
        if isinstance(body, bytes):
            data = body
        else:
            raws: list[bytes] = []

            def default(value: Any) -> Any:
                if isinstance(value, Ref):
                    return self.model.resolve(value, tenant)
                if isinstance(value, Raw):
                    raws.append(value.text)
                    return f"\x00raw{len(raws) - 1}\x00"
                raise TypeError(type(value).__name__)

            data = orjson.dumps(body, default=default, option=orjson.OPT_PASSTHROUGH_DATACLASS)
            for n, raw in enumerate(raws):
                data = data.replace(orjson.dumps(f"\x00raw{n}\x00"), raw)
        try:
            return data, orjson.loads(data)
        except orjson.JSONDecodeError:
            return data, None

    async def _send(self, request: FuzzRequest) -> None:
        sent = self._prepare(request)
        tally = self.tally.setdefault(request.route, RouteTally())
        started = time.perf_counter()
        async with self.session.request(
            request.method, URL(sent.url, encoded=True), headers=sent.headers, data=sent.body
        ) as response:
            raw = await response.read()
            tally.seconds += time.perf_counter() - started
            tally.requests += 1
            tally.statuses[response.status] += 1
            if response.status < 300:
                self.journal.append(f"{response.status} {describe(sent, response.status, raw)}")
            try:
                self._judge(sent, response, raw)
            except FuzzFailure as exc:
                self._fail(f"{exc}\n{describe(sent, response.status, raw)}{self._related(sent)}")

    def _related(self, sent: Sent) -> str:
        """Earlier accepted requests naming the same conversation or response as this one."""
        names = {self.model_path(sent, n) for n in range(len(sent.request.path))}
        names |= {v for v in sent.headers.values() if v.startswith(("conv_", "resp_", "fz-"))}
        names = {n for n in names if n.startswith(("conv_", "resp_", "fz-"))}
        related = [entry for entry in self.journal[:-1] if any(name in entry for name in names)]
        return "".join(f"\n  after accepted:\n  {entry}" for entry in related[-5:])

    def _fail(self, message: str) -> None:
        self.failures.append(message)
        if self.fail_fast:
            raise FuzzFailure(message)

    # -- judging -------------------------------------------------------------------------------------

    def _judge(self, sent: Sent, response: aiohttp.ClientResponse, raw: bytes) -> None:
        status = response.status
        if status >= 500:
            raise FuzzFailure(f"{status} from {sent.request.route}")
        if status >= 400:
            check_error_body(status, raw)
            return
        tenant = sent.headers.get("X-Tenant-Id", "")
        if not is_client_id(tenant):
            raise FuzzFailure(f"{status} without a valid X-Tenant-Id")
        answer = parse_answer(response, raw)
        check_documented(sent)
        self.model.learn_ids(tenant, answer)
        try:
            self._accepted(sent, tenant, response, answer)
        except AssertionError as exc:
            raise FuzzFailure(f"the model disagrees: {exc}") from None

    def _accepted(self, sent: Sent, tenant: str, response: aiohttp.ClientResponse, answer: Any) -> None:
        """Move the model as the accepted request moved the store."""
        route, body, model = sent.request.route, sent.json, self.model
        path = [self.model_path(sent, n) for n in range(len(sent.request.path))]
        version_header = response.headers.get("X-Conversation-Version")
        version = int(version_header) if version_header else None
        if route == "POST /v1/responses":
            response_id = answer["id"]
            if model.is_replay(response_id):
                return
            if body.get("store") is False:
                model.unstored(tenant, response_id)
                return
            added = input_count(body.get("input", [])) + len(answer["output"])
            model.write(
                tenant,
                response.headers["X-Conversation-Id"],
                added=added,
                parent=body.get("previous_response_id"),
                response_id=response_id,
                version=version,
            )
        elif route == "POST /v1/chat/completions":
            response_id = response.headers.get("X-Response-Id")
            if response_id is None:
                raise AssertionError("a stateful chat answer without X-Response-Id")
            if model.is_replay(response_id):
                return
            output = 1 if isinstance(answer, list) else _chat_output_count(answer)
            model.write(
                tenant,
                response.headers["X-Conversation-Id"],
                added=messages_count(body["messages"]) + output,
                parent=sent.headers.get("X-Previous-Response-Id") or None,
                response_id=response_id,
                version=version,
            )
        elif route == "POST /v1/sessions/{conversation_id}/append":
            conv = model.conversations.get((tenant, path[2]))
            if conv is not None and answer["version"] <= conv.version:
                assert "Idempotency-Key" in sent.headers, "an older version without an Idempotency-Key"
                return
            model.write(
                tenant,
                path[2],
                added=answer["appended"],
                parent=body.get("previous_response_id"),
                version=answer["version"],
            )
        elif route == "POST /v1/sessions/{conversation_id}/store_response":
            if model.is_replay(answer["response_id"]):
                return
            model.write(
                tenant,
                path[2],
                added=store_response_count(body),
                parent=body.get("previous_response_id"),
                response_id=answer["response_id"],
                version=answer["version"],
            )
        elif route == "POST /v1/conversations":
            if "Idempotency-Key" in sent.headers and (tenant, answer["id"]) in model.conversations:
                return  # a keyed create's id derives from its key: this one is its replay
            model.write(tenant, answer["id"], added=len(body.get("items") or []))
        elif route == "POST /v1/conversations/{conversation_id}/items":
            if model.keyed_replay(tenant, path[2], sent.headers.get("Idempotency-Key"), sent.body):
                return
            model.write(tenant, path[2], added=len(answer["data"]))
        elif route == "DELETE /v1/conversations/{conversation_id}/items/{item_id}":
            model.write(tenant, path[2], added=-1)
        elif route in ("DELETE /v1/conversations/{conversation_id}", "DELETE /v1/sessions/{conversation_id}"):
            assert (tenant, path[2]) in model.conversations, f"deleted {path[2]}, unknown to the model"
            model.drop_conversation(tenant, path[2])
        elif route == "DELETE /v1/responses/{response_id}":
            stored = model.responses.get(path[2])
            assert stored is not None and stored.live, f"deleted {path[2]}, not live in the model"
            stored.live = False
        elif route == "GET /v1/sessions/{conversation_id}":
            conv = model.conversations.get((tenant, path[2]))
            assert conv is not None, f"{path[2]} is served but no accepted request wrote it"
            assert answer["version"] == conv.version, f"version {answer['version']}, model {conv.version}"

    def model_path(self, sent: Sent, n: int) -> str:
        """The n-th path segment as the sidecar decoded it."""
        from urllib.parse import unquote

        return unquote(sent.url.split("?", 1)[0].split("/")[n + 1])

    # -- the store afterwards --------------------------------------------------------------------------

    def mismatches(self) -> list[str]:
        return self.loop.run_until_complete(self._mismatches())

    async def _live_conversations(self) -> set[tuple[str, str]]:
        store = store_backend(self.app[STORE])
        if isinstance(store, MemoryStore):
            return set(store._conversations)
        port = URL(self.redis_url).port
        assert port is not None
        found: set[tuple[str, str]] = set()
        cursor = "0"
        while True:
            reply = redis_call(port, "SCAN", cursor, "MATCH", "cs:*:meta", "COUNT", "1000")
            cursor, keys = reply[0], reply[1]
            for key in keys:
                match = _META_KEY.match(key if isinstance(key, str) else key.decode())
                if match:
                    found.add((match.group(1), match.group(2)))
            if cursor in ("0", b"0"):
                return found

    async def _mismatches(self) -> list[str]:
        wrong: list[str] = []
        live = await self._live_conversations()
        expected = set(self.model.conversations)
        for key in sorted(live - expected):
            wrong.append(f"conversation {key} is stored but no accepted request wrote it")
        for key in sorted(expected - live):
            wrong.append(f"conversation {key} was written by an accepted request but is not stored")
        for (tenant, conversation_id), conv in sorted(self.model.conversations.items()):
            if (tenant, conversation_id) not in live:
                continue
            async with self.session.get(
                f"/v1/sessions/{quote(conversation_id, safe='')}", headers={"X-Tenant-Id": tenant}
            ) as response:
                stored = await response.json()
            got = (stored["version"], stored["turns"], len(stored["items"]))
            want = (conv.version, conv.turns, conv.items if conv.items is not None else len(stored["items"]))
            if got != want:
                wrong.append(f"{tenant}/{conversation_id}: (version, turns, items) {got}, model {want}")
        for response_id, expect in sorted(self.model.responses.items()):
            async with self.session.get(
                f"/v1/responses/{response_id}", headers={"X-Tenant-Id": expect.tenant or TENANTS[0]}
            ) as response:
                if (response.status == 200) != expect.live:
                    wrong.append(f"response {response_id}: {response.status}, model live={expect.live}")
        return wrong


def _routable(segment: str) -> str:
    """A path segment that reaches the route it was made for. An empty one, or one with a brace (the
    router's parameter syntax), is matched by no route and so goes to the engine's pass-through; one past
    aiohttp's request-line limit is refused before any handler runs."""
    return (segment or " ").replace("{", "(").replace("}", ")")[:1000]


def _header_safe(value: str) -> str:
    """Control characters cannot be sent in a header (the client refuses them, as HTTP does), nor a header
    past aiohttp's line limit (refused before any handler runs)."""
    return "".join(c for c in value if c.isprintable() or c == " ")[:6000]


def _chat_output_count(answer: Any) -> int:
    message = answer["choices"][0]["message"]
    calls = len(message.get("tool_calls") or [])
    return calls + (1 if message.get("content") not in (None, "") or not calls else 0)


def parse_answer(response: aiohttp.ClientResponse, raw: bytes) -> Any:
    """A JSON answer, or for an event stream the last Responses object it carried (a list for chat)."""
    if response.content_type != "text/event-stream":
        return orjson.loads(raw)
    final: Any = []
    for line in raw.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        event = orjson.loads(line[6:])
        if isinstance(event, dict) and isinstance(event.get("response"), dict):
            final = event["response"]
    return final


def check_documented(sent: Sent) -> None:
    """An accepted body validates against the request schema openapi.json publishes for its route."""
    method, path = sent.request.route.split(" ", 1)
    schema = OPERATIONS[(method, path)].body
    if schema is None or sent.json is None:
        return
    errors = [error.message for error in Draft202012Validator(schema).iter_errors(sent.json)]
    if errors:
        raise FuzzFailure(f"accepted, but openapi.json's schema refuses the body: {errors[0][:300]}")


def check_error_body(status: int, raw: bytes) -> None:
    """The OpenAI error body, with `param` on every 400 that is about one field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FuzzFailure(f"{status} with a body that is not JSON") from None
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        raise FuzzFailure(f"{status} with a body that is not an OpenAI error")
    error = body["error"]
    if set(error) != ERROR_FIELDS:
        raise FuzzFailure(f"{status}: error fields {sorted(error)}")
    if not isinstance(error["message"], str) or not error["message"] or not isinstance(error["type"], str):
        raise FuzzFailure(f"{status}: error message or type missing")
    if not all(isinstance(error[k], str | None) for k in ("param", "code")):
        raise FuzzFailure(f"{status}: param or code not a string")
    if status == 400 and error["code"] not in WHOLE_BODY_CODES and error["param"] is None:
        raise FuzzFailure(f"400 without a param: {error['message']!r}")


def describe(sent: Sent, status: int, raw: bytes) -> str:
    body = sent.body if sent.body is None or len(sent.body) < 600 else sent.body[:600] + b"..."
    return (
        f"  request: {sent.request.method} {sent.url}\n  headers: {sent.headers}\n  body: {body!r}\n"
        f"  answer: {status} {raw[:600]!r}"
    )


def table(tally: dict[str, RouteTally]) -> str:
    """route | requests | 2xx | 4xx by status | 5xx | seconds, one line per route and a total."""
    rows = [("route", "requests", "2xx", "4xx by status", "5xx", "seconds")]
    total = RouteTally()
    for route, t in sorted(tally.items()):
        total.requests += t.requests
        total.statuses.update(t.statuses)
        total.seconds += t.seconds
        rows.append(_row(route, t))
    rows.append(_row("total", total))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _row(route: str, t: RouteTally) -> tuple[str, str, str, str, str, str]:
    ok = sum(n for s, n in t.statuses.items() if s < 300)
    bad = " ".join(f"{s}:{n}" for s, n in sorted(t.statuses.items()) if 400 <= s < 500)
    server = sum(n for s, n in t.statuses.items() if s >= 500)
    return (route, str(t.requests), str(ok), bad or "-", str(server), f"{t.seconds:.1f}")
