"""`POST /v1/responses/input_tokens` through the openai SDK (`client.responses.input_tokens.count`), on
both upstream modes and both store backends: the count of exactly what create sends, nothing written."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.appkeys import CONTEXT
from sidecar.ids import parse_response_id
from tests.fixtures.fake_engine import CONFIG_KEY, create_fake_engine, recorded
from tests.integration.responses_stack import COMBOS, RecordingTransport, Stack, check_exchange
from tests.unit.test_context_tokens import build_tokenizer

KEY = "compaction-test-key-0123456789abcdef"
POLICY = """
packs:
  support:
    system: "You are the help desk ."
    few_shot:
      - {{role: user, content: "the cat ?"}}
      - {{role: assistant, content: "it slept ."}}
policies:
  default:
    keep_last_turns: 2
    summary_every_turns: 2
  tight:
    max_input_tokens: 30
tokenizers:
  tok: {tokenizer}
tenants:
  acme: {{api_keys: [sk-acme]}}
  globex: {{api_keys: [sk-globex]}}
compaction:
  key: {key}
"""

OpenStack = Callable[..., Awaitable[Stack]]


@dataclass
class Tenants:
    """The same sidecar seen by two tenants (api_keys auth)."""

    acme: openai.AsyncOpenAI
    globex: openai.AsyncOpenAI


@pytest.fixture
async def open_stack(
    request: pytest.FixtureRequest, make_sidecar: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[OpenStack]:
    async for opener in stack_opener(request, make_sidecar, tmp_path):
        yield opener


async def stack_opener(
    request: pytest.FixtureRequest, make_sidecar: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[OpenStack]:
    """Opens the fake engine and the sidecar with POLICY (or `policy`) for one (api, store) combination;
    a client per tenant. Every create the SDK made is checked for conformance when the test ends."""
    opened: list[tuple[Stack, list[openai.AsyncOpenAI]]] = []

    async def open_(api: str, store: str, policy: str | None = None) -> Stack:
        tokenizer = build_tokenizer(tmp_path / "tokenizer.json")
        path = tmp_path / "policy.yaml"
        path.write_text(policy if policy is not None else POLICY.format(tokenizer=tokenizer, key=KEY))
        redis_url = request.getfixturevalue("redis_server").url if store == "redis" else None
        engine = TestClient(TestServer(create_fake_engine()))
        await engine.start_server()
        sidecar = await make_sidecar(
            upstream=str(engine.make_url("")).rstrip("/"),
            upstream_api=api,
            redis_url=redis_url or "memory://",
            config_path=str(path),
            auth="api_keys",
        )
        transport = RecordingTransport()
        clients = [
            openai.AsyncOpenAI(
                api_key=key,
                base_url=str(sidecar.make_url("/v1")),
                http_client=httpx.AsyncClient(transport=transport),
                max_retries=0,
            )
            for key in ("sk-acme", "sk-globex")
        ]
        stack = Stack(api, engine, sidecar, clients[0], transport, redis_url)
        stack.tenants = Tenants(*clients)  # type: ignore[attr-defined]
        opened.append((stack, clients))
        return stack

    yield open_
    for stack, clients in opened:
        try:
            for exchange in stack.transport.exchanges:
                if exchange.path == "/v1/responses":  # the objects of the routes under test are checked here
                    check_exchange(exchange)
        finally:
            for client in clients:
                await client.close()
            await stack.engine.close()


def globex(stack: Stack) -> openai.AsyncOpenAI:
    tenants: Tenants = stack.tenants  # type: ignore[attr-defined]
    return tenants.globex


combos = pytest.mark.parametrize(("api", "store"), COMBOS, ids=[f"{a}-{s}" for a, s in COMBOS])


async def created_tokens(stack: Stack, **body: Any) -> int:
    """What create itself says it sends: X-Estimated-Input-Tokens of the prompt it built."""
    raw = await stack.client.responses.with_raw_response.create(**body)
    return int(raw.headers["X-Estimated-Input-Tokens"])


@combos
async def test_the_count_is_what_create_sends_for_a_new_and_a_chained_conversation(
    open_stack: OpenStack, api: str, store: str
) -> None:
    stack = await open_stack(api, store)
    client = stack.client
    first = {"model": "tok", "input": "the cat sat on a mat .", "instructions": "hello world ."}
    counted = await client.responses.input_tokens.count(**first)
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == await created_tokens(stack, **first)
    # A chain of turns, folded into summaries by the default policy (keep 2, fold in blocks of 2).
    previous = (await client.responses.create(**first)).id
    for n in range(5):
        body = {"model": "tok", "input": f"question {n} : then it slept ?", "previous_response_id": previous}
        raw = await client.responses.input_tokens.with_raw_response.count(**body)
        assert raw.headers["X-Token-Count-Source"] == "tokenizer"
        fingerprint = raw.headers["X-Prefix-Fingerprint"]
        counted_n = raw.parse().input_tokens
        made = await client.responses.with_raw_response.create(**body)
        assert counted_n == int(made.headers["X-Estimated-Input-Tokens"]), n
        assert fingerprint == made.headers["X-Prefix-Fingerprint"], n
        previous = made.parse().id
    # The pack and the tools count too, as create sends them.
    tools = [{"type": "function", "name": "stock", "parameters": {"type": "object", "properties": {}}}]
    packed = {"model": "tok", "input": "the cat ?", "tools": tools, "previous_response_id": previous}
    header = {"X-Prompt-Pack": "support"}
    with_pack = await client.responses.input_tokens.count(**packed, extra_headers=header)
    without = await client.responses.input_tokens.count(**packed)
    assert with_pack.input_tokens > without.input_tokens
    assert with_pack.input_tokens == await created_tokens(stack, **packed, extra_headers=header)


@combos
async def test_counting_reserves_and_writes_nothing_and_calls_no_generation(
    open_stack: OpenStack, api: str, store: str
) -> None:
    stack = await open_stack(api, store)
    response = await stack.client.responses.create(model="m", input="the cat sat .")
    stored, generations = await stack.stored_count(), len(await stack.engine_bodies())
    for _ in range(3):
        await stack.client.responses.input_tokens.count(
            model="m", input="and then ?", previous_response_id=response.id
        )
    assert await stack.stored_count() == stored
    conversation = await stack.client.conversations.create(items=[{"role": "user", "content": "hi"}])
    stored = await stack.stored_count()
    await stack.client.responses.input_tokens.count(model="m", input="x", conversation=conversation.id)
    assert await stack.stored_count() == stored
    assert len(await stack.engine_bodies()) == generations
    # The next real turn continues the history as if no count had happened.
    chained = await stack.client.responses.create(
        model="m", input="and then ?", previous_response_id=response.id
    )
    items = await stack.client.responses.input_items.list(chained.id, order="asc")
    assert [i.type for i in items.data] == ["message", "message", "message"]
    # No record index was reserved by the counts: the chained turn takes the one after the first.
    assert parse_response_id(response.id)[1] == 0  # type: ignore[index]
    assert parse_response_id(chained.id)[1] == 1  # type: ignore[index]


@combos
async def test_the_counter_is_named_tokenizer_engine_or_estimate(
    open_stack: OpenStack, api: str, store: str
) -> None:
    stack = await open_stack(api, store)
    raw = await stack.client.responses.input_tokens.with_raw_response.count(model="tok", input="the cat")
    assert raw.headers["X-Token-Count-Source"] == "tokenizer" and raw.parse().input_tokens == 2 + 4
    assert recorded(stack.engine.app, "/tokenize") == []
    # No tokenizer for this model: the engine's /tokenize counts (the fake: a token per 4 characters).
    raw = await stack.client.responses.input_tokens.with_raw_response.count(model="m", input="abcdefgh")
    assert raw.headers["X-Token-Count-Source"] == "engine" and raw.parse().input_tokens == 2 + 4
    assert recorded(stack.engine.app, "/tokenize")


@combos
async def test_an_engine_that_counts_the_templated_prompt_is_asked_once_not_per_item(
    open_stack: OpenStack, api: str, store: str
) -> None:
    stack = await open_stack(api, store)
    stack.engine.app[CONFIG_KEY].counts_messages = True  # vLLM's /tokenize of messages
    chat = [{"role": "user", "content": "abcdefgh"}, {"role": "assistant", "content": "ijkl"}]
    raw = await stack.client.responses.input_tokens.with_raw_response.count(
        model="m", input=[*chat, {"role": "user", "content": "mnopqrstuvwx"}]
    )
    assert raw.headers["X-Token-Count-Source"] == "engine"
    # 5 tokens of markup a message, a token per 4 characters of text (the fake's template), 3 to open the
    # answer: the template's count, not the items' (4 of markup each).
    texts = ["abcdefgh", "ijkl", "mnopqrstuvwx"]
    assert raw.parse().input_tokens == sum(5 + (len(t) + 3) // 4 for t in texts) + 3
    calls = recorded(stack.engine.app, "/tokenize")
    assert [sorted(c["body"]) for c in calls] == [["add_generation_prompt", "messages", "model"]]
    # Without a template count, the items are counted one by one, as before.
    stack.engine.app[CONFIG_KEY].counts_messages = False
    raw = await stack.client.responses.input_tokens.with_raw_response.count(model="m", input="abcdefgh")
    assert raw.headers["X-Token-Count-Source"] == "engine" and raw.parse().input_tokens == 2 + 4
    assert any("content" in c["body"] for c in recorded(stack.engine.app, "/tokenize"))


async def test_without_an_engine_to_count_the_count_says_it_is_an_estimate(
    make_sidecar: Callable[..., Any],
) -> None:
    sidecar = await make_sidecar(redis_url="memory://")  # its upstream: nothing listens
    resp = await sidecar.post("/v1/responses/input_tokens", json={"model": "m", "input": "abcdefgh"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Token-Count-Source"] == "estimate"
    assert await resp.json() == {
        "object": "response.input_tokens",
        "input_tokens": int(resp.headers["X-Estimated-Input-Tokens"]),
    }


@combos
async def test_errors_are_as_create_gives_them(open_stack: OpenStack, api: str, store: str) -> None:
    stack = await open_stack(api, store)
    client = stack.client
    stored = await stack.stored_count()  # the redis-server is shared with other tests
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.input_tokens.count(model="m", input="x", previous_response_id="resp_nope")
    assert caught.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.responses.input_tokens.count(model="m", input="x", conversation="conv_nope")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.input_tokens.count(
            model="m", input="x", extra_headers={"X-Prompt-Pack": "sales"}
        )
    assert caught.value.param == "X-Prompt-Pack"
    long_input = "the cat sat on a mat " * 20
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.input_tokens.count(model="tight", input=long_input)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as created:
        await client.responses.create(model="tight", input=long_input)
    assert created.value.message == caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.input_tokens.count(model="m", input=[{"type": "nope"}])  # type: ignore[list-item]
    assert caught.value.param == "input[0].type"
    assert await stack.stored_count() == stored


@combos
async def test_another_tenants_response_is_not_found(open_stack: OpenStack, api: str, store: str) -> None:
    stack = await open_stack(api, store)
    response = await stack.client.responses.create(model="m", input="secret")
    with pytest.raises(openai.BadRequestError) as caught:
        await globex(stack).responses.input_tokens.count(
            model="m", input="x", previous_response_id=response.id
        )
    assert caught.value.code == "previous_response_not_found"
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(
            api_key="sk-wrong", base_url=str(stack.sidecar.make_url("/v1")), max_retries=0
        ).responses.input_tokens.count(model="m", input="x")


async def test_an_upstream_summariser_policy_counts_with_the_stored_summaries(
    make_sidecar: Callable[..., Any], engine: TestServer, tmp_path: Path
) -> None:
    tokenizer = build_tokenizer(tmp_path / "tokenizer.json")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "policies: {default: {keep_last_turns: 2, summary_every_turns: 2, summariser: upstream}}\n"
        f"tokenizers: {{m: {tokenizer}}}\n"
    )
    sidecar = await make_sidecar(
        upstream=str(engine.make_url("")).rstrip("/"), redis_url="memory://", config_path=str(policy)
    )
    writer = sidecar.server.app[CONTEXT].summary_writer
    previous = None
    for n in range(1, 8):
        body: dict[str, Any] = {"model": "m", "input": f"question {n}"}
        if previous:
            body["previous_response_id"] = previous
        resp = await sidecar.post("/v1/responses", json=body)
        assert resp.status == 200, await resp.text()
        previous = (await resp.json())["id"]
        await writer.idle()
    engine_calls = len(recorded(engine.app, "/v1/responses"))
    body = {"model": "m", "input": "question 8", "previous_response_id": previous}
    counted = await sidecar.post("/v1/responses/input_tokens", json=body)
    assert counted.status == 200, await counted.text()
    await writer.idle()
    assert len(recorded(engine.app, "/v1/responses")) == engine_calls  # no summary was asked for
    created = await sidecar.post("/v1/responses", json=body)
    # The engine's own summaries of turns 1-4 are in both: the fingerprint covers the summary text.
    assert counted.headers["X-Prefix-Fingerprint"] == created.headers["X-Prefix-Fingerprint"]
    assert (await counted.json())["input_tokens"] == int(created.headers["X-Estimated-Input-Tokens"])
    (sent,) = [
        r["body"]
        for r in recorded(engine.app, "/v1/responses")
        if isinstance(r["body"]["input"], list)
        and r["body"]["input"][-1]["content"][0]["text"] == "question 8"
    ]
    assert sent["instructions"].count("Summary of turns") == 2
