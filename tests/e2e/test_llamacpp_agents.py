"""The OpenAI Agents SDK on the real engine through the sidecar: runs chained by `previous_response_id` and
runs sharing a `conversation_id` get the earlier turns from the sidecar's store, not from the client.

Gemma 3 270M has no tool template, so the tool loop itself is proven on the fake engine
(tests/integration/test_responses_tools.py); here each run is one model call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled

from tests.e2e.sdk_objects import MODEL
from tests.fixtures.sidecar_process import SidecarProcess

pytestmark = pytest.mark.slow


@pytest.fixture
async def agent(sidecar: SidecarProcess) -> AsyncIterator[Agent[Any]]:
    set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=f"{sidecar.url}/v1", api_key="sk-unused", max_retries=0)
    model = OpenAIResponsesModel(model=MODEL, openai_client=client)
    # Gemma 3 270M writes its end-of-turn marker as text and goes on: `stop` (a llama.cpp extension, passed
    # on in both upstream modes) ends the answer there, so it completes, which the Agents SDK requires.
    settings = ModelSettings(temperature=0.0, max_tokens=64, extra_body={"stop": ["<|im_end|>"]})
    try:
        yield Agent(
            name="notes", instructions="Reply with one short sentence.", model=model, model_settings=settings
        )
    finally:
        await client.close()


def _input_tokens(result: Any) -> int:
    usage = result.raw_responses[-1].usage
    assert usage is not None and usage.input_tokens > 0
    return int(usage.input_tokens)


async def _stored_roles(sidecar: SidecarProcess, path: str) -> list[str]:
    async with openai.AsyncOpenAI(base_url=f"{sidecar.url}/v1", api_key="sk-unused") as client:
        page = await client.get(path, cast_to=object, options={"params": {"order": "asc", "limit": 100}})
    assert isinstance(page, dict)
    return [str(item.get("role") or item.get("type")) for item in page["data"]]


async def test_runs_chained_by_previous_response_id_carry_the_earlier_turn(
    sidecar: SidecarProcess, agent: Agent[Any]
) -> None:
    first = await Runner.run(agent, "My name is Ada and I keep bees.")
    second = await Runner.run(agent, "What is my name?", previous_response_id=first.last_response_id)

    assert first.last_response_id and second.last_response_id
    # The second run sent only its new input; the engine saw the first turn too, which costs tokens.
    assert _input_tokens(second) > _input_tokens(first)
    roles = await _stored_roles(sidecar, f"/responses/{second.last_response_id}/input_items")
    assert roles == ["user", "assistant", "user"]


async def test_runs_on_one_conversation_id_share_its_history(
    sidecar: SidecarProcess, agent: Agent[Any]
) -> None:
    async with openai.AsyncOpenAI(base_url=f"{sidecar.url}/v1", api_key="sk-unused") as client:
        conversation = await client.conversations.create()

    first = await Runner.run(agent, "My name is Ada and I keep bees.", conversation_id=conversation.id)
    second = await Runner.run(agent, "What is my name?", conversation_id=conversation.id)

    assert _input_tokens(second) > _input_tokens(first)
    roles = await _stored_roles(sidecar, f"/conversations/{conversation.id}/items")
    assert roles == ["user", "assistant", "user", "assistant"]
