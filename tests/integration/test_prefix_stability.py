"""Byte-stable prompts and the prefix fingerprint (docs/api.md §6, §7): a replay reports its first call's
fingerprint, and the fingerprint follows what the engine is sent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.fake_engine import CONFIG_KEY, recorded
from tests.integration.conftest import SidecarFactory

Client = TestClient[Any, Any]

PACK_WITH_TOOLS = """
packs:
  p:
    system: "You help."
    tools:
      - {type: function, name: stock, parameters: {type: object, properties: {sku: {type: string}}}}
policies:
  default:
    pack: p
"""
FOLDING = """
policies:
  default:
    keep_last_turns: 2
    summary_every_turns: 2
"""


async def sidecar_for(
    make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path, api: str, policy: str | None = None
) -> Client:
    settings: dict[str, Any] = {}
    if policy is not None:
        path = tmp_path / "policy.yaml"
        path.write_text(policy)
        settings["config_path"] = str(path)
    upstream = str(engine.make_url("")).rstrip("/")
    return await make_sidecar(upstream=upstream, upstream_api=api, redis_url="memory://", **settings)


async def post_turn(sidecar: Client, route: str, n: int, previous: str | None, key: str) -> Any:
    """Turn `n` of one conversation, by /v1/responses (chained by `previous`) or by stateful chat."""
    if route == "responses":
        body: dict[str, Any] = {"model": "m", "input": f"turn {n}"}
        if previous:
            body["previous_response_id"] = previous
        return await sidecar.post("/v1/responses", json=body, headers={"Idempotency-Key": key})
    return await sidecar.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": f"turn {n}"}]},
        headers={"Idempotency-Key": key, "X-Conversation-Id": "conv_replayed"},
    )


# -- a replay reports its first call's fingerprint ----


@pytest.mark.parametrize("policy", [PACK_WITH_TOOLS, FOLDING], ids=["pack-tools", "summary"])
@pytest.mark.parametrize("route", ["responses", "chat"])
async def test_a_replayed_turn_reports_the_fingerprint_of_its_first_call(
    make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path, route: str, policy: str
) -> None:
    sidecar = await sidecar_for(make_sidecar, engine, tmp_path, "responses", policy)
    previous = None
    for n in range(5):  # turn 4 is past the first fold (keep_last_turns 2, blocks of 2)
        first = await post_turn(sidecar, route, n, previous, f"k{n}")
        again = await post_turn(sidecar, route, n, previous, f"k{n}")
        assert first.status == again.status == 200, await again.text()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["X-Prefix-Fingerprint"] == first.headers["X-Prefix-Fingerprint"], f"turn {n}"
        previous = first.headers["X-Response-Id"]


async def test_a_replayed_background_turn_reports_the_fingerprint_of_its_first_call(
    make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path
) -> None:
    sidecar = await sidecar_for(make_sidecar, engine, tmp_path, "responses", PACK_WITH_TOOLS)
    body = {"model": "m", "input": "hello", "background": True}
    first = await sidecar.post("/v1/responses", json=body, headers={"Idempotency-Key": "bg"})
    assert first.status == 200, await first.text()
    response_id = (await first.json())["id"]
    for _ in range(200):
        status = (await (await sidecar.get(f"/v1/responses/{response_id}")).json())["status"]
        if status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.02)
    again = await sidecar.post("/v1/responses", json=body, headers={"Idempotency-Key": "bg"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["X-Prefix-Fingerprint"] == first.headers["X-Prefix-Fingerprint"]


# -- the fingerprint follows what the engine gets, not how the client spelled it ----

TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
}
CHAT_TOOL = {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}


def sent_messages(engine: TestServer) -> list[list[bytes]]:
    """Each chat-completions request's messages, each message as its JSON bytes."""
    return [
        [orjson.dumps(m) for m in r["body"]["messages"]] for r in recorded(engine.app, "/v1/chat/completions")
    ]


async def test_one_tool_is_one_fingerprint_on_stateful_chat_and_on_responses(
    make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path
) -> None:
    """One conversation on a chat-only engine, its turns alternating stateful chat (chat-style tools) and
    /v1/responses (flat tools): the engine gets the same tools and a prompt that only grows, so the
    fingerprint stays."""
    sidecar = await sidecar_for(make_sidecar, engine, tmp_path, "chat")
    chat_turn = {"X-Conversation-Id": "conv_mixed"}
    turns = [
        await sidecar.post(
            "/v1/chat/completions",
            headers=chat_turn,
            json={"model": "m", "messages": [{"role": "user", "content": "a"}], "tools": [CHAT_TOOL]},
        ),
        await sidecar.post(
            "/v1/responses", json={"model": "m", "input": "b", "conversation": "conv_mixed", "tools": [TOOL]}
        ),
        await sidecar.post(
            "/v1/chat/completions",
            headers=chat_turn,
            json={"model": "m", "messages": [{"role": "user", "content": "c"}], "tools": [CHAT_TOOL]},
        ),
    ]
    assert [t.status for t in turns] == [200, 200, 200]
    sent_tools = {orjson.dumps(r["body"]["tools"]) for r in recorded(engine.app, "/v1/chat/completions")}
    assert len(sent_tools) == 1
    prompts = sent_messages(engine)
    assert all(prompts[n][: len(prompts[n - 1])] == prompts[n - 1] for n in (1, 2))
    assert len({t.headers["X-Prefix-Fingerprint"] for t in turns}) == 1


# -- tools reach the engine in the canonical form the fingerprint hashes ----


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_two_spellings_of_one_tool_reach_the_engine_as_the_same_bytes(
    make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path, api: str
) -> None:
    """Keys in another order and the description in NFD are one tool (docs/api.md §6): one fingerprint,
    and the same tool bytes to the engine."""
    sidecar = await sidecar_for(make_sidecar, engine, tmp_path, api)
    composed = {**TOOL, "description": "Caf\u00e9"}
    decomposed = {key: composed[key] for key in reversed(list(composed))} | {"description": "Cafe\u0301"}
    first = await sidecar.post("/v1/responses", json={"model": "m", "input": "a", "tools": [composed]})
    body = {
        "model": "m",
        "input": "b",
        "tools": [decomposed],
        "previous_response_id": (await first.json())["id"],
    }
    second = await sidecar.post("/v1/responses", json=body)
    assert first.status == second.status == 200
    path = "/v1/responses" if api == "responses" else "/v1/chat/completions"
    sent = [orjson.dumps(r["body"]["tools"]) for r in recorded(engine.app, path)]
    assert sent[0] == sent[1]
    assert first.headers["X-Prefix-Fingerprint"] == second.headers["X-Prefix-Fingerprint"]


async def test_stateful_chat_sends_its_tools_canonical(
    make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path
) -> None:
    sidecar = await sidecar_for(make_sidecar, engine, tmp_path, "chat")
    function = {"parameters": {"type": "object"}, "name": "lookup", "description": "Cafe\u0301"}
    resp = await sidecar.post(
        "/v1/chat/completions",
        headers={"X-Conversation-Id": "conv_tools"},
        json={
            "model": "m",
            "messages": [{"role": "user", "content": "a"}],
            "tools": [{"function": function, "type": "function"}],
        },
    )
    assert resp.status == 200
    (sent,) = recorded(engine.app, "/v1/chat/completions")
    expected = [{"function": {**function, "description": "Caf\u00e9"}, "type": "function"}]
    assert orjson.dumps(sent["body"]["tools"]) == orjson.dumps(expected, option=orjson.OPT_SORT_KEYS)


# -- a chat-only engine's prompt only grows at its end ----


async def test_the_engines_tool_call_leaves_the_clients_last_assistant_message_as_it_was_sent(
    make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path
) -> None:
    """The input ends with an assistant message (a prefill, or one added through the Conversations API) and
    the engine answers with a tool call: the next prompt sends that message as the first did, and the call
    as an assistant message of its own; the session API resolves the same messages."""
    sidecar = await sidecar_for(make_sidecar, engine, tmp_path, "chat")
    engine.app[CONFIG_KEY].mode = "tool_call"
    prefill = [{"role": "user", "content": "Find x"}, {"role": "assistant", "content": "Sure, checking."}]
    first = await (
        await sidecar.post("/v1/responses", json={"model": "m", "tools": [TOOL], "input": prefill})
    ).json()
    call = next(o for o in first["output"] if o["type"] == "function_call")
    engine.app[CONFIG_KEY].mode = "ok"
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "x=1"}
    body = {"model": "m", "tools": [TOOL], "previous_response_id": first["id"], "input": [output]}
    assert (await sidecar.post("/v1/responses", json=body)).status == 200
    turn1, turn2 = sent_messages(engine)
    assert turn2[: len(turn1)] == turn1
    assert orjson.loads(turn2[len(turn1)]) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call["call_id"],
                "type": "function",
                "function": {"name": "lookup", "arguments": call["arguments"]},
            }
        ],
    }
    resolved = await (await sidecar.get(f"/v1/sessions/resolve?previous_response_id={first['id']}")).json()
    assert [orjson.dumps(m) for m in resolved["messages"]] == turn2[: len(turn1) + 1]
