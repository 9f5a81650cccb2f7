"""The LiteLLM kit (examples/litellm) with the real `litellm` package, on the sidecar and the fake engine."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

# Before litellm is imported: its model-price map is read from the package, not downloaded.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")

from sidecar.app import create_app  # noqa: E402
from sidecar.config import Config  # noqa: E402
from tests.fixtures.fake_engine import create_fake_engine, recorded  # noqa: E402

KIT = Path(__file__).resolve().parents[2] / "examples" / "litellm"
MODEL = "fake-model"


def load_kit(name: str) -> ModuleType:
    """A kit file imported by path: examples/ is no package, and examples/litellm must not shadow litellm."""
    spec = importlib.util.spec_from_file_location(f"convostore_kit_{name}", KIT / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


callback_kit = load_kit("convostore_callback")
chain_kit = load_kit("responses_chain")


@pytest.fixture(autouse=True)
def quiet_litellm() -> Iterator[None]:
    """No telemetry, and no callback left behind for the next test."""
    litellm.telemetry = False
    saved = list(litellm.callbacks)
    yield
    litellm.callbacks = saved


@pytest.fixture
async def engine() -> AsyncIterator[TestServer]:
    server = TestServer(create_fake_engine())
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture(params=["memory", "redis"])
async def sidecar(request: pytest.FixtureRequest, engine: TestServer) -> AsyncIterator[TestClient[Any, Any]]:
    """The sidecar in front of the fake engine (which serves both /v1/responses and /v1/chat/completions)."""
    redis_url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    config = Config.from_env(
        {}, upstream=str(engine.make_url("")).rstrip("/"), upstream_api="responses", redis_url=redis_url
    )
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    yield client
    await client.close()


def base_url(server: TestServer | TestClient[Any, Any]) -> str:
    return str(server.make_url("")).rstrip("/")


def texts(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of each message in Responses input items or chat messages."""
    out = []
    for item in items:
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        out.append((item["role"], content))
    return out


async def session_items(sidecar: TestClient[Any, Any], conversation_id: str) -> list[tuple[str, str]]:
    resp = await sidecar.get(f"/v1/sessions/{conversation_id}")
    assert resp.status == 200, await resp.text()
    return texts((await resp.json())["items"])


# --------------------------------------------------------------------------------------------------
# (a) the sidecar as LiteLLM's OpenAI base URL


async def test_responses_chain_through_the_sidecar(sidecar: TestClient[Any, Any], engine: TestServer) -> None:
    url = base_url(sidecar)
    # The kit's own (synchronous) function, off the event loop that serves the sidecar and the engine.
    first = await asyncio.to_thread(chain_kit.ask, url, MODEL, "My name is Ada.")
    assert first.id.startswith("resp_")
    second = await asyncio.to_thread(chain_kit.ask, url, MODEL, "What is my name?", first.id)
    third = await litellm.aresponses(
        model=f"openai/{MODEL}",
        input="Spell it.",
        api_base=f"{url}/v1",
        api_key="none",
        previous_response_id=second.id,
    )
    assert len({first.id, second.id, third.id}) == 3
    assert third.output[0].content[0].text == "echo: Spell it."

    sent = [r["body"] for r in recorded(engine.app, "/v1/responses")]
    assert len(sent) == 3 and all(body["model"] == MODEL for body in sent)
    assert all("previous_response_id" not in body for body in sent)  # the engine never needs state
    assert texts(sent[2]["input"]) == [
        ("user", "My name is Ada."),
        ("assistant", "echo: My name is Ada."),
        ("user", "What is my name?"),
        ("assistant", "echo: What is my name?"),
        ("user", "Spell it."),
    ]
    # LiteLLM wraps the sidecar's ids in its own; the kit unwraps them for use with the sidecar directly.
    ids = [chain_kit.sidecar_response_id(r.id) for r in (first, second, third)]
    assert ids[0] != first.id and all(i.startswith("resp_") for i in ids)
    stored = await sidecar.get(f"/v1/responses/{ids[2]}")
    assert stored.status == 200 and (await stored.json())["previous_response_id"] == ids[1]
    # The sidecar's own id works as previous_response_id through LiteLLM too.
    fourth = await asyncio.to_thread(chain_kit.ask, url, MODEL, "Thanks.", ids[2])
    assert texts(recorded(engine.app, "/v1/responses")[3]["body"]["input"])[-2:] == [
        ("assistant", "echo: Spell it."),
        ("user", "Thanks."),
    ]
    assert chain_kit.sidecar_response_id(fourth.id) != ids[2]


# --------------------------------------------------------------------------------------------------
# (b) the callback: plain chat completions, state through the session API


async def test_callback_makes_acompletion_stateful(sidecar: TestClient[Any, Any], engine: TestServer) -> None:
    litellm.callbacks = [callback_kit.ConvoStoreSessions(base_url(sidecar))]
    conversation_id = f"litellm-{os.urandom(4).hex()}"

    async def turn(text: str) -> Any:
        # Straight to the engine: the sidecar only keeps the state (the gateway keeps the proxy role).
        return await litellm.acompletion(
            model=f"openai/{MODEL}",
            api_base=f"{base_url(engine)}/v1",
            api_key="none",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
            metadata={callback_kit.CONVERSATION_KEY: conversation_id},
        )

    first = await turn("My name is Ada.")
    second = await turn("What is my name?")
    assert first.choices[0].message.content == "echo: My name is Ada."

    sent = [r["body"] for r in recorded(engine.app, "/v1/chat/completions")]
    assert len(sent) == 2
    assert texts(sent[0]["messages"]) == [("system", "Be brief."), ("user", "My name is Ada.")]
    assert texts(sent[1]["messages"]) == [
        ("system", "Be brief."),  # the caller's system prompt steers each call and is not stored
        ("user", "My name is Ada."),
        ("assistant", "echo: My name is Ada."),
        ("user", "What is my name?"),
    ]
    assert await session_items(sidecar, conversation_id) == [
        ("user", "My name is Ada."),
        ("assistant", "echo: My name is Ada."),
        ("user", "What is my name?"),
        ("assistant", "echo: What is my name?"),
    ]
    stored = second._hidden_params["convostore"]
    assert stored["conversation_id"] == conversation_id and stored["version"] == 4
    assert first._hidden_params["convostore"]["response_id"] != stored["response_id"]
    # The stored answer is a response like any other: it resolves to the whole conversation.
    query = {"previous_response_id": stored["response_id"]}
    resolved = await sidecar.get("/v1/sessions/resolve", params=query)
    assert texts((await resolved.json())["messages"]) == await session_items(sidecar, conversation_id)


async def test_conversation_resolves_to_its_newest_response(
    sidecar: TestClient[Any, Any], engine: TestServer
) -> None:
    litellm.callbacks = [callback_kit.ConvoStoreSessions(base_url(sidecar))]
    conversation_id = f"litellm-{os.urandom(4).hex()}"
    reply = await litellm.acompletion(
        model=f"openai/{MODEL}",
        api_base=f"{base_url(engine)}/v1",
        api_key="none",
        messages=[{"role": "user", "content": "hello"}],
        metadata={callback_kit.CONVERSATION_KEY: conversation_id},
    )
    resolved = await sidecar.get("/v1/sessions/resolve", params={"conversation_id": conversation_id})
    assert (await resolved.json())["response_id"] == reply._hidden_params["convostore"]["response_id"]


async def test_callback_leaves_calls_without_a_conversation_alone(
    sidecar: TestClient[Any, Any], engine: TestServer
) -> None:
    litellm.callbacks = [callback_kit.ConvoStoreSessions(base_url(sidecar))]
    for text in ("one", "two"):
        reply = await litellm.acompletion(
            model=f"openai/{MODEL}",
            api_base=f"{base_url(engine)}/v1",
            api_key="none",
            messages=[{"role": "user", "content": text}],
        )
        assert "convostore" not in reply._hidden_params
    sent = [r["body"] for r in recorded(engine.app, "/v1/chat/completions")]
    assert [texts(body["messages"]) for body in sent] == [[("user", "one")], [("user", "two")]]


async def test_callback_stores_nothing_when_the_engine_fails(
    sidecar: TestClient[Any, Any], engine: TestServer
) -> None:
    handler = callback_kit.ConvoStoreSessions(base_url(sidecar))
    litellm.callbacks = [handler]
    conversation_id = f"litellm-{os.urandom(4).hex()}"
    with pytest.raises(litellm.exceptions.InternalServerError):
        await litellm.acompletion(
            model=f"openai/{MODEL}",
            api_base=f"{base_url(engine)}/v1",
            api_key="none",
            messages=[{"role": "user", "content": "hello"}],
            metadata={callback_kit.CONVERSATION_KEY: conversation_id},
            extra_headers={"X-Fake-Mode": "fail_status"},
            num_retries=0,
        )
    resp = await sidecar.get(f"/v1/sessions/{conversation_id}")
    assert resp.status == 404
    assert handler._pending == {}


async def test_stateful_completion_streamed(sidecar: TestClient[Any, Any], engine: TestServer) -> None:
    conversation_id = f"litellm-{os.urandom(4).hex()}"

    async def turn(text: str, **kwargs: Any) -> Any:
        return await callback_kit.stateful_completion(
            convostore_url=base_url(sidecar),
            conversation_id=conversation_id,
            messages=[{"role": "user", "content": text}],
            model=f"openai/{MODEL}",
            api_base=f"{base_url(engine)}/v1",
            api_key="none",
            **kwargs,
        )

    first = await turn("My name is Ada.")
    assert first._hidden_params["convostore"]["version"] == 2
    chunks = [chunk async for chunk in await turn("What is my name?", stream=True)]
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert streamed == "echo: What is my name?"

    sent = [r["body"] for r in recorded(engine.app, "/v1/chat/completions")]
    assert sent[1]["stream"] is True
    assert texts(sent[1]["messages"]) == [
        ("user", "My name is Ada."),
        ("assistant", "echo: My name is Ada."),
        ("user", "What is my name?"),
    ]
    assert await session_items(sidecar, conversation_id) == [
        ("user", "My name is Ada."),
        ("assistant", "echo: My name is Ada."),
        ("user", "What is my name?"),
        ("assistant", "echo: What is my name?"),
    ]


async def test_callback_refuses_a_streamed_call(sidecar: TestClient[Any, Any], engine: TestServer) -> None:
    litellm.callbacks = [callback_kit.ConvoStoreSessions(base_url(sidecar))]
    with pytest.raises(Exception, match="non-streamed"):
        await litellm.acompletion(
            model=f"openai/{MODEL}",
            api_base=f"{base_url(engine)}/v1",
            api_key="none",
            messages=[{"role": "user", "content": "hello"}],
            metadata={callback_kit.CONVERSATION_KEY: "streamed"},
            stream=True,
        )
    assert recorded(engine.app, "/v1/chat/completions") == []
