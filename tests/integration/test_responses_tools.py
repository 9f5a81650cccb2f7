"""Tool calls through POST /v1/responses: function_call out (arguments streamed), its output sent back with
`previous_response_id` or a conversation, and the OpenAI Agents SDK driving the loop — for both engine APIs
and both stores."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from tests.integration.responses_stack import Stack, engine_view, stack

__all__ = ["stack"]  # the fixture, imported so pytest finds it

MODEL = "fake-model"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_function_call_round_trip(stack: Stack, stream: bool) -> None:
    await stack.set_mode("tool_call")
    call_response, deltas = await _create(stack, stream, input="Paris", tools=[WEATHER_TOOL])
    (call,) = call_response.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id and call.id != call.call_id
    assert orjson.loads(call.arguments) == {"city": "Paris"}
    if stream:
        assert len(deltas) >= 2 and "".join(deltas) == call.arguments

    output = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    answer, _ = await _create(
        stack, stream, input=[output], previous_response_id=call_response.id, tools=[WEATHER_TOOL]
    )
    assert answer.output_text == "echo: sunny" and answer.previous_response_id == call_response.id

    await stack.set_mode("ok")
    last, _ = await _create(stack, stream, input="thanks", previous_response_id=answer.id)
    assert last.output_text == "echo: thanks"

    bodies = await stack.engine_bodies()
    called = ("function_call", call.call_id, "get_weather", '{"city":"Paris"}')
    returned = ("function_call_output", call.call_id, "sunny")
    assert [engine_view(stack.api, b)[1] for b in bodies] == [
        [("user", "Paris")],
        [("user", "Paris"), called, returned],
        [("user", "Paris"), called, returned, ("assistant", "echo: sunny"), ("user", "thanks")],
    ]
    tool_names = [_tool_names(stack.api, b) for b in bodies]
    assert tool_names == [["get_weather"], ["get_weather"], []]

    stored = await stack.client.responses.retrieve(call_response.id)
    assert stored.output[0].type == "function_call" and stored.output[0].call_id == call.call_id
    status, items = await stack.get(f"/v1/responses/{last.id}/input_items", order="asc")
    assert status == 200
    assert [i["type"] for i in items["data"]] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    assert items["data"][1]["id"] == call.id and items["data"][2]["id"].startswith("fc")


async def _create(stack: Stack, stream: bool, **fields: Any) -> tuple[Any, list[str]]:
    """The final response, and the streamed argument deltas if streamed."""
    if not stream:
        return await stack.client.responses.create(model=MODEL, **fields), []
    events = [
        event async for event in await stack.client.responses.create(model=MODEL, stream=True, **fields)
    ]
    kinds = [event.type for event in events]
    if "response.function_call_arguments.delta" in kinds:
        done = kinds.index("response.function_call_arguments.done")
        assert kinds[2] == "response.output_item.added" and kinds[done + 1] == "response.output_item.done"
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    return events[-1].response, deltas


def _tool_names(api: str, body: dict[str, Any]) -> list[str]:
    tools = body.get("tools") or []
    return [t["name"] if api == "responses" else t["function"]["name"] for t in tools]


# --------------------------------------------------------------------------------------------------
# the OpenAI Agents SDK


def weather_agent(stack: Stack) -> tuple[Agent[Any], list[str]]:
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    set_tracing_disabled(True)
    model = OpenAIResponsesModel(model=MODEL, openai_client=stack.client)
    agent: Agent[Any] = Agent(
        name="weather", instructions="Answer about the weather.", tools=[get_weather], model=model
    )
    return agent, calls


async def test_agent_with_auto_previous_response_id(stack: Stack) -> None:
    await stack.set_mode("tool_call")
    agent, calls = weather_agent(stack)
    result = await Runner.run(agent, "Oslo", auto_previous_response_id=True)

    assert calls == ["Oslo"]
    assert result.final_output == "echo: sunny in Oslo"
    sent = stack.sent()
    assert len(sent) == 2 and "previous_response_id" not in sent[0]
    first_id = stack.transport.exchanges[0].json["id"]
    assert sent[1]["previous_response_id"] == first_id
    assert [i["type"] for i in sent[1]["input"]] == ["function_call_output"]  # only the new item
    call_id = sent[1]["input"][0]["call_id"]

    views = [engine_view(stack.api, b) for b in await stack.engine_bodies()]
    assert [instructions for instructions, _ in views] == ["Answer about the weather."] * 2
    assert views[1][1] == [
        ("user", "Oslo"),
        ("function_call", call_id, "get_weather", '{"city":"Oslo"}'),
        ("function_call_output", call_id, "sunny in Oslo"),
    ]
    assert result.last_response_id == stack.transport.exchanges[1].json["id"]
    assert (await stack.client.responses.retrieve(result.last_response_id)).output_text == result.final_output


async def test_agent_with_conversation_id(stack: Stack) -> None:
    resp = await stack.sidecar.post("/v1/conversations", json={})
    assert resp.status == 200, await resp.text()
    conversation_id = (await resp.json())["id"]
    await stack.set_mode("tool_call")
    agent, calls = weather_agent(stack)

    first = await Runner.run(agent, "Oslo", conversation_id=conversation_id)
    second = await Runner.run(agent, "Rome", conversation_id=conversation_id)

    assert calls == ["Oslo", "Rome"]
    assert (first.final_output, second.final_output) == ("echo: sunny in Oslo", "echo: sunny in Rome")
    sent = stack.sent()
    assert len(sent) == 4
    assert all(s["conversation"] in (conversation_id, {"id": conversation_id}) for s in sent)
    assert all("previous_response_id" not in s for s in sent)
    assert [[_kind(i) for i in s["input"]] for s in sent] == [["user"], ["function_call_output"]] * 2

    views = [engine_view(stack.api, b)[1] for b in await stack.engine_bodies()]
    oslo, rome = sent[1]["input"][0]["call_id"], sent[3]["input"][0]["call_id"]
    run_one = [
        ("user", "Oslo"),
        ("function_call", oslo, "get_weather", '{"city":"Oslo"}'),
        ("function_call_output", oslo, "sunny in Oslo"),
        ("assistant", "echo: sunny in Oslo"),
    ]
    assert views[1] == run_one[:3]
    assert views[2] == [*run_one, ("user", "Rome")]
    assert views[3] == [
        *run_one,
        ("user", "Rome"),
        ("function_call", rome, "get_weather", '{"city":"Rome"}'),
        ("function_call_output", rome, "sunny in Rome"),
    ]

    status, items = await stack.get(f"/v1/conversations/{conversation_id}/items", order="asc", limit=100)
    assert status == 200 and len(items["data"]) == 8


def _kind(item: dict[str, Any]) -> str:
    return str(item.get("role") or item.get("type"))


async def test_call_ids_are_the_sidecars(stack: Stack) -> None:
    """Call ids, like item ids, are minted by the sidecar in the conversation's slot, never the engine's:
    an engine that repeated them would pair a later tool output with the wrong call in the history."""
    await stack.set_mode("tool_call")
    first = await stack.client.responses.create(model=MODEL, input="weather?", tools=[WEATHER_TOOL])
    second = await stack.client.responses.create(
        model=MODEL, input="and tomorrow?", tools=[WEATHER_TOOL], previous_response_id=first.id
    )
    calls = [item for r in (first, second) for item in r.output if item.type == "function_call"]
    tag = first.id[len("resp_") : len("resp_") + 12]
    assert len(calls) == 2 and calls[0].call_id != calls[1].call_id
    assert all(c.call_id.startswith(f"call_{tag}") for c in calls)
