"""A background response's prompt is the foreground one's (docs/api.md §7): the pack, folded history,
the budget, and the real X-Prefix-Fingerprint / X-Estimated-Input-Tokens headers; `background` a boolean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer

from sidecar.runs.context import RUNS
from tests.integration.test_background import poll
from tests.integration.test_context_window import engine_bodies, sidecar_with


def sdk(sidecar: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(sidecar.make_url("/v1")), api_key="sk-test", max_retries=0)


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_a_background_run_sends_the_pack_and_reports_the_prompt_it_built(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, api: str
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path, api)
    body = {"model": "m", "input": "hi", "instructions": "Be brief."}
    pack = {"X-Prompt-Pack": "support"}
    foreground = await sidecar.post("/v1/responses", json=body, headers=pack)
    assert foreground.status == 200, await foreground.text()
    background = await sidecar.post("/v1/responses", json={**body, "background": True}, headers=pack)
    assert background.status == 200, await background.text()
    for header in ("X-Prefix-Fingerprint", "X-Estimated-Input-Tokens"):
        assert background.headers[header] == foreground.headers[header], header
    async with sdk(sidecar) as client:
        done = await poll(client, (await background.json())["id"])
    assert done.status == "completed"
    path = "/v1/responses" if api == "responses" else "/v1/chat/completions"
    sent_foreground, sent_background = engine_bodies(engine, path)[-2:]
    if api == "responses":
        assert sent_background["instructions"] == "You are the help desk.\n\nBe brief."
        assert [i["content"][0]["text"] for i in sent_background["input"]] == ["Nails?", "Aisle 4.", "hi"]
        assert sent_background["stream"] is True and "background" not in sent_background
        sent_background["stream"] = sent_foreground["stream"] = None
    else:
        assert sent_background["messages"][0]["content"] == "You are the help desk.\n\nBe brief."
        sent_background.pop("stream"), sent_background.pop("stream_options")
    assert without_ids(sent_background) == without_ids(
        sent_foreground
    )  # the very prompt sent in the foreground


def without_ids(body: dict[str, Any]) -> dict[str, Any]:
    """An engine body without the input's minted item ids (each turn mints its own)."""
    items = [{k: v for k, v in item.items() if k != "id"} for item in body.get("input", [])]
    return {**body, "input": items} if "input" in body else body


async def test_background_turns_fold_history_like_foreground_ones(
    make_sidecar: Any, engine: TestServer, tmp_path: Path
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path)
    previous, fingerprints = None, []
    async with sdk(sidecar) as client:
        for n in range(1, 6):
            body: dict[str, Any] = {"model": "m", "input": f"question {n}", "background": True}
            if previous:
                body["previous_response_id"] = previous
            resp = await sidecar.post("/v1/responses", json=body)
            assert resp.status == 200, await resp.text()
            fingerprints.append(resp.headers["X-Prefix-Fingerprint"])
            previous = (await resp.json())["id"]
            assert (await poll(client, previous)).status == "completed"
    # keep 2, fold in blocks of 2: the fold at turn 4 changes the prefix
    assert [n + 1 for n in range(1, 5) if fingerprints[n] != fingerprints[n - 1]] == [4]
    last = engine_bodies(engine, "/v1/responses")[-1]
    assert last["instructions"].startswith("Summary of turns 1-2:")
    assert [i["content"][0]["text"] for i in last["input"]] == [
        "question 3", "echo: question 3", "question 4", "echo: question 4", "question 5"
    ]  # fmt: skip


async def test_a_background_turn_over_budget_is_a_400_and_starts_nothing(
    make_sidecar: Any, engine: TestServer, tmp_path: Path
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path)
    resp = await sidecar.post(
        "/v1/responses", json={"model": "tight", "input": "word " * 200, "background": True}
    )
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == "context_length_exceeded", error
    assert sidecar.app[RUNS].running == 0
    assert engine_bodies(engine, "/v1/responses") == []


@pytest.mark.parametrize("value", ["yes", 1, [], {}])
async def test_background_must_be_a_boolean(make_sidecar: Any, engine: TestServer, value: Any) -> None:
    sidecar = await make_sidecar(upstream=str(engine.make_url("")), redis_url="memory://")
    resp = await sidecar.post("/v1/responses", json={"model": "m", "input": "x", "background": value})
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["param"] == "background", error


async def test_background_false_is_a_foreground_call(make_sidecar: Any, engine: TestServer) -> None:
    sidecar = await make_sidecar(upstream=str(engine.make_url("")), redis_url="memory://")
    resp = await sidecar.post("/v1/responses", json={"model": "m", "input": "x", "background": False})
    assert resp.status == 200 and (await resp.json())["status"] == "completed"
