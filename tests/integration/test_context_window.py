"""The context window through the sidecar and the fake engine (docs/api.md §6, §7): packs in both upstream
modes and stateful chat, folding into summaries, the budget, real counts, and the session API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.fake_engine import recorded
from tests.integration.test_metrics_and_logs import sample
from tests.unit.test_context_tokens import build_tokenizer

Client = TestClient[Any, Any]

POLICY = """
packs:
  support:
    system: "You are the help desk."
    few_shot:
      - {role: user, content: "Nails?"}
      - {role: assistant, content: "Aisle 4."}
    tools:
      - {type: function, name: stock, parameters: {type: object, properties: {sku: {type: string}}}}
policies:
  default:
    keep_last_turns: 2
    summary_every_turns: 2
  tight:
    max_input_tokens: 60
  packed:
    pack: support
"""


async def sidecar_with(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, api: str = "responses", policy: str = POLICY
) -> Client:
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    upstream = str(engine.make_url("")).rstrip("/")
    return await make_sidecar(
        upstream=upstream, upstream_api=api, redis_url="memory://", config_path=str(path)
    )


def engine_bodies(engine: TestServer, path: str) -> list[Any]:
    return [r["body"] for r in recorded(engine.app, path)]


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_the_pack_comes_first_in_both_upstream_modes(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, api: str
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path, api)
    resp = await sidecar.post(
        "/v1/responses",
        json={"model": "m", "input": "hi", "instructions": "Be brief."},
        headers={"X-Prompt-Pack": "support"},
    )
    assert resp.status == 200, await resp.text()
    if api == "responses":
        body = engine_bodies(engine, "/v1/responses")[-1]
        assert body["instructions"] == "You are the help desk.\n\nBe brief."
        assert [i["content"][0]["text"] for i in body["input"]] == ["Nails?", "Aisle 4.", "hi"]
        assert body["tools"][0]["name"] == "stock"
    else:
        body = engine_bodies(engine, "/v1/chat/completions")[-1]
        assert body["messages"] == [
            {"role": "system", "content": "You are the help desk.\n\nBe brief."},
            {"role": "user", "content": "Nails?"},
            {"role": "assistant", "content": "Aisle 4."},
            {"role": "user", "content": "hi"},
        ]
        assert body["tools"][0]["function"]["name"] == "stock"
    # The policy's `pack` applies when the request names none.
    resp = await sidecar.post("/v1/responses", json={"model": "packed", "input": "hi"})
    assert resp.status == 200
    assert (
        resp.headers["X-Prefix-Fingerprint"]
        == (
            await sidecar.post(
                "/v1/responses", json={"model": "m", "input": "x"}, headers={"X-Prompt-Pack": "support"}
            )
        ).headers["X-Prefix-Fingerprint"]
    )


async def test_an_unknown_pack_is_a_400_naming_it_and_calls_no_engine(
    make_sidecar: Any, engine: TestServer, tmp_path: Path
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path)
    for path, body in (
        ("/v1/responses", {"model": "m", "input": "hi"}),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/sessions/c-pack/append", {"role": "user", "content": "hi"}),
    ):
        resp = await sidecar.post(
            path, json=body, headers={"X-Prompt-Pack": "sales", "X-Conversation-Id": "c-pack"}
        )
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["param"] == "X-Prompt-Pack" and "'sales'" in error["message"]
    assert recorded(engine.app, "/v1/responses") == recorded(engine.app, "/v1/chat/completions") == []
    assert (await sidecar.get("/v1/sessions/c-pack")).status == 404


async def test_stateful_chat_gets_the_pack(make_sidecar: Any, engine: TestServer, tmp_path: Path) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path)
    cid = f"c-{os.urandom(4).hex()}"
    resp = await sidecar.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-Conversation-Id": cid, "X-Prompt-Pack": "support"},
    )
    assert resp.status == 200, await resp.text()
    body = engine_bodies(engine, "/v1/chat/completions")[-1]
    assert body["messages"][0] == {"role": "system", "content": "You are the help desk."}
    assert body["tools"][0]["function"]["name"] == "stock"
    stored = await (await sidecar.get(f"/v1/sessions/{cid}")).json()
    assert [i["role"] for i in stored["items"]] == ["user", "assistant"]  # the pack is never stored


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_old_turns_fold_into_summaries_and_the_fingerprint_changes_only_at_folds(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, api: str
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path, api)
    previous, fingerprints = None, []
    for n in range(1, 8):
        body: dict[str, Any] = {"model": "m", "input": f"question {n}"}
        if previous:
            body["previous_response_id"] = previous
        resp = await sidecar.post("/v1/responses", json=body)
        assert resp.status == 200, await resp.text()
        previous = (await resp.json())["id"]
        fingerprints.append(resp.headers["X-Prefix-Fingerprint"])
    # keep 2, fold in blocks of 2: folds at turns 4 and 6
    changes = [n + 1 for n in range(1, 7) if fingerprints[n] != fingerprints[n - 1]]
    assert changes == [4, 6]
    if api == "responses":
        last = engine_bodies(engine, "/v1/responses")[-1]
        system, texts = last["instructions"], [i["content"][0]["text"] for i in last["input"]]
    else:
        messages = engine_bodies(engine, "/v1/chat/completions")[-1]["messages"]
        system, texts = messages[0]["content"], [m["content"] for m in messages[1:]]
    assert system.startswith("Summary of turns 1-2:\n- user: question 1\n- assistant: echo: question 1")
    assert "Summary of turns 3-4:" in system
    assert texts == ["question 5", "echo: question 5", "question 6", "echo: question 6", "question 7"]
    # Trimming shapes what the engine gets, never what is stored.
    items = await (await sidecar.get(f"/v1/responses/{previous}/input_items", params={"limit": "100"})).json()
    assert len(items["data"]) == 13
    metrics = await (await sidecar.get("/convostore/metrics")).text()
    assert sample(metrics, "convostore_apc_fingerprint_changes_total") == 2
    assert sample(metrics, "convostore_summaries_total", summariser="template") == 2
    assert sample(metrics, "convostore_summary_latency_ms_count") == 2


async def test_the_budget_refuses_or_trims_by_truncation_with_engine_counts(
    make_sidecar: Any, engine: TestServer, tmp_path: Path
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path)
    previous = None
    for n in range(4):
        body: dict[str, Any] = {
            "model": "tight",
            "input": f"question {n} " + "word " * 20,
            "truncation": "auto",
        }
        if previous:
            body["previous_response_id"] = previous
        resp = await sidecar.post("/v1/responses", json=body)
        assert resp.status == 200, await resp.text()
        assert int(resp.headers["X-Estimated-Input-Tokens"]) <= 60
        previous = (await resp.json())["id"]
    tokenized = len(recorded(engine.app, "/tokenize"))
    # each stored item and summary counted once: a turn counts only what is new
    resp = await sidecar.post(
        "/v1/responses",
        json={"model": "tight", "input": "word " * 20, "previous_response_id": previous},
    )
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == "context_length_exceeded" and error["param"] == "input"
    assert len(recorded(engine.app, "/tokenize")) - tokenized <= 3
    resp = await sidecar.post(
        "/v1/responses", json={"model": "tight", "input": "word " * 400, "truncation": "auto"}
    )
    assert resp.status == 400 and "alone" in (await resp.json())["error"]["message"]
    resp = await sidecar.post("/v1/responses", json={"model": "m", "input": "x", "truncation": "sometimes"})
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "truncation"


async def test_a_tokenizer_file_gives_real_counts(
    make_sidecar: Any, engine: TestServer, tmp_path: Path
) -> None:
    tokenizer = build_tokenizer(tmp_path / "tokenizer.json")
    sidecar = await sidecar_with(
        make_sidecar, engine, tmp_path, policy=f"tokenizers: {{tiny: {tokenizer}}}\n"
    )
    resp = await sidecar.post("/v1/responses", json={"model": "tiny", "input": "the cat sat on a mat ."})
    assert resp.status == 200
    assert resp.headers["X-Estimated-Input-Tokens"] == str(7 + 4)  # 7 tokens and a message's overhead
    assert recorded(engine.app, "/tokenize") == []


async def test_the_session_api_resolves_and_trims_as_the_proxy_sends(
    make_sidecar: Any, engine: TestServer, tmp_path: Path
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path)
    cid = f"c-{os.urandom(4).hex()}"
    fingerprints = set()
    for n in range(1, 7):
        resp = await sidecar.post(f"/v1/sessions/{cid}/append", json={"role": "user", "content": f"q{n}"})
        fingerprints.add((await resp.json())["prefix_fingerprint"])
        await sidecar.post(
            f"/v1/sessions/{cid}/store_response", json={"message": {"role": "assistant", "content": f"a{n}"}}
        )
    assert len(fingerprints) == 3  # none, one block, two blocks
    resolved = await (await sidecar.get("/v1/sessions/resolve", params={"conversation_id": cid})).json()
    assert resolved["messages"][0]["content"].startswith("Summary of turns 1-2:")
    assert [m["content"] for m in resolved["messages"][1:]] == ["q5", "a5", "q6", "a6"]
    session = await (await sidecar.get(f"/v1/sessions/{cid}")).json()
    assert len(session["items"]) == 12
    assert session["prefix_fingerprint"] == resolved["prefix_fingerprint"]
    assert session["estimated_input_tokens"] == resolved["estimated_input_tokens"]
    trimmed = await (await sidecar.post(f"/v1/sessions/{cid}/trim", json={"keep_last_turns": 1})).json()
    assert trimmed["summarised_turns"] == 4 and trimmed["version"] == 12
    trimmed = await (await sidecar.post(f"/v1/sessions/{cid}/trim", json={"max_input_tokens": 40})).json()
    assert trimmed["summarised_turns"] >= 4 and trimmed["estimated_input_tokens"] <= 40
    resp = await sidecar.post(f"/v1/sessions/{cid}/trim", json={"max_input_tokens": 1})
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "max_input_tokens"
    packed = await (
        await sidecar.get(
            "/v1/sessions/resolve", params={"conversation_id": cid}, headers={"X-Prompt-Pack": "support"}
        )
    ).json()
    assert packed["messages"][0]["content"].startswith("You are the help desk.\n\nSummary of turns 1-2:")
    assert packed["prefix_fingerprint"] != resolved["prefix_fingerprint"]


async def test_an_unusable_summariser_url_stops_start_up(
    make_sidecar: Any, engine: TestServer, tmp_path: Path
) -> None:
    from sidecar.config import ConfigError

    with pytest.raises(ConfigError, match=r"policies\.default\.summariser_url"):
        await sidecar_with(
            make_sidecar,
            engine,
            tmp_path,
            policy="policies: {default: {summariser: http, summariser_url: 'host:9000'}}\n",
        )
