"""The `upstream` and `http` summarisers through the sidecar (docs/api.md §7), on both store backends: the
turn is answered first, the summary is written in the background and stored, and the next turn folds with
the stored text; the fingerprint changes once per block; a failing summariser leaves the template summary."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sidecar.appkeys import CONTEXT
from sidecar.context import summarisers_remote
from sidecar.context.summarisers_remote import INSTRUCTIONS
from tests.fixtures.fake_engine import recorded
from tests.integration.test_metrics_and_logs import sample

Client = TestClient[Any, Any]

POLICY = """
policies:
  default:
    keep_last_turns: 2
    summary_every_turns: 2
    summariser: {summariser}
    summariser_url: {url}
"""


@pytest.fixture(params=["memory", "redis"])
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return str(server.url)


class SummaryEndpoint:
    """A tiny `http` summariser: records each request; answers `{"summary": ...}`, or `status`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        self.answer: dict[str, Any] | None = None  # instead of the summary

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response({"error": "down"}, status=self.status)
        if self.answer is not None:
            return web.json_response(self.answer)
        return web.json_response(
            {"summary": f"They talked about turns {body['first_turn']} to {body['last_turn']}."}
        )


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[SummaryEndpoint, str]]:
    summariser = SummaryEndpoint()
    app = web.Application()
    app.router.add_post("/summarise", summariser.handle)
    server = TestServer(app)
    await server.start_server()
    yield summariser, str(server.make_url("/summarise"))
    await server.close()


async def sidecar_with(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, redis_url: str, policy: str, api: str = "responses"
) -> Client:
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    upstream = str(engine.make_url("")).rstrip("/")
    client: Client = await make_sidecar(
        upstream=upstream, upstream_api=api, redis_url=redis_url, config_path=str(path)
    )
    return client


async def idle(sidecar: Client) -> None:
    """Wait for the summaries the sidecar is writing in the background."""
    assert sidecar.app is not None
    await sidecar.app[CONTEXT].summary_writer.idle()


async def chain(
    sidecar: Client, turns: Iterable[int], previous: str | None = None, word: str = "question"
) -> tuple[str, list[str]]:
    """Turns chained by previous_response_id, each waiting for the background summaries of the one
    before (what a client's think time gives them); the last id and every fingerprint."""
    fingerprints = []
    for n in turns:
        body: dict[str, Any] = {"model": "m", "input": f"{word} {n}"}
        if previous:
            body["previous_response_id"] = previous
        resp = await sidecar.post("/v1/responses", json=body)
        assert resp.status == 200, await resp.text()
        previous = (await resp.json())["id"]
        fingerprints.append(resp.headers["X-Prefix-Fingerprint"])
        await idle(sidecar)
    assert previous is not None
    return previous, fingerprints


def turn_requests(engine: TestServer, path: str = "/v1/responses") -> list[dict[str, Any]]:
    """What the engine got for the turns themselves (not the summary requests)."""
    bodies = [r["body"] for r in recorded(engine.app, path)]
    return [b for b in bodies if INSTRUCTIONS not in str(b.get("instructions")) and not _chat_summary(b)]


def _chat_summary(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    return bool(messages) and messages[0].get("content") == INSTRUCTIONS


def changes(fingerprints: list[str]) -> list[int]:
    return [n + 1 for n in range(1, len(fingerprints)) if fingerprints[n] != fingerprints[n - 1]]


async def test_the_engine_summarises_after_the_turn_and_the_next_turn_folds_with_it(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, redis_url: str
) -> None:
    policy = POLICY.format(summariser="upstream", url="null")
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path, redis_url, policy)
    last, fingerprints = await chain(sidecar, range(1, 8))
    # keep 2, blocks of 2: the policy folds turns 1-2 at turn 4 and 3-4 at turn 6; each waits one turn for
    # its stored summary (sent verbatim meanwhile), so the fingerprint changes at turns 5 and 7 only.
    assert changes(fingerprints) == [5, 7]
    summary_calls = [
        r["body"]
        for r in recorded(engine.app, "/v1/responses")
        if r["body"].get("instructions") == INSTRUCTIONS
    ]
    assert len(summary_calls) == 2
    assert summary_calls[0]["input"].startswith("user: question 1\nassistant: echo: question 1")
    turns = turn_requests(engine)
    assert len(turns) == 7
    texts = [[i["content"][0]["text"] for i in body["input"]] for body in turns]
    assert texts[3][0] == "question 1"  # turn 4: the fold waits, everything verbatim
    assert texts[4] == ["question 3", "echo: question 3", "question 4", "echo: question 4", "question 5"]
    assert turns[4]["instructions"].startswith("Summary of turns 1-2:\necho: ")  # the engine's own words
    assert turns[6]["instructions"].count("Summary of turns") == 2
    # Between folds, a turn's summaries are the bytes of the turn before (what keeps the prefix cached).
    assert turns[5]["instructions"] == turns[4]["instructions"]
    assert turns[6]["instructions"].startswith(turns[4]["instructions"] + "\n\n")
    metrics = await (await sidecar.get("/convostore/metrics")).text()
    assert sample(metrics, "convostore_summaries_total", summariser="upstream") == 2
    assert sample(metrics, "convostore_summaries_total", summariser="template") == 0
    assert sample(metrics, "convostore_summary_latency_ms_count") == 2
    assert sample(metrics, "convostore_apc_fingerprint_changes_total") == 2
    # Trimming never changes what is stored.
    items = await (await sidecar.get(f"/v1/responses/{last}/input_items", params={"limit": "100"})).json()
    assert len(items["data"]) == 13


async def test_continuing_twice_sends_the_same_stored_bytes_and_a_branch_gets_its_own(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, redis_url: str
) -> None:
    policy = POLICY.format(summariser="upstream", url="null")
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path, redis_url, policy)
    ids: list[str] = []
    for n in range(1, 7):
        last, _ = await chain(sidecar, range(n, n + 1), previous=ids[-1] if ids else None)
        ids.append(last)
    calls = len(recorded(engine.app, "/v1/responses"))
    # Two continuations of one response (another replica, a retry): the same stored summaries, and
    # nothing summarised again.
    await chain(sidecar, range(7, 8), previous=ids[-1])
    await chain(sidecar, range(7, 8), previous=ids[-1])
    first, second = turn_requests(engine)[-2:]
    assert first["instructions"] == second["instructions"]
    assert first["instructions"].count("Summary of turns") == 2
    assert len(recorded(engine.app, "/v1/responses")) - calls == 2
    # A branch from turn 3 has other turns 4..: its block 3-4 is summarised from its own items.
    previous = ids[2]
    for n in range(4, 8):
        previous, _ = await chain(sidecar, [n], previous=previous, word="other")
    summary_inputs = [
        r["body"]["input"]
        for r in recorded(engine.app, "/v1/responses")
        if r["body"].get("instructions") == INSTRUCTIONS
    ]
    assert len(summary_inputs) == 3  # 1-2 (shared by both branches), 3-4, and the branch's 3-4
    assert summary_inputs[1] != summary_inputs[2]
    assert summary_inputs[2].startswith("user: question 3\nassistant: echo: question 3\nuser: other 4")


async def test_the_engine_summarises_through_chat_completions_in_chat_mode(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, redis_url: str
) -> None:
    policy = POLICY.format(summariser="upstream", url="null")
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path, redis_url, policy, api="chat")
    _, fingerprints = await chain(sidecar, range(1, 6))
    assert changes(fingerprints) == [5]
    bodies = [r["body"] for r in recorded(engine.app, "/v1/chat/completions")]
    [summary_call] = [b for b in bodies if _chat_summary(b)]
    assert summary_call["messages"][1]["content"].startswith("user: question 1\nassistant: echo: question 1")
    assert summary_call["max_tokens"] > 0
    last = turn_requests(engine, "/v1/chat/completions")[-1]["messages"]
    assert last[0]["role"] == "system" and last[0]["content"].startswith("Summary of turns 1-2:\necho: ")
    assert last[1]["content"] == "question 3"


@pytest.mark.parametrize("route", ["responses", "stateful chat"])
async def test_an_http_summariser_writes_the_summary(
    make_sidecar: Any,
    engine: TestServer,
    tmp_path: Path,
    redis_url: str,
    endpoint: tuple[SummaryEndpoint, str],
    route: str,
) -> None:
    summariser, url = endpoint
    api = "responses" if route == "responses" else "chat"
    sidecar = await sidecar_with(
        make_sidecar, engine, tmp_path, redis_url, POLICY.format(summariser="http", url=url), api
    )
    cid = f"conv_{os.urandom(6).hex()}"
    if route == "responses":
        _, fingerprints = await chain(sidecar, range(1, 6))
    else:
        fingerprints = []
        for n in range(1, 6):  # stateful chat: only the new message is sent, the sidecar keeps the rest
            resp = await sidecar.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": f"question {n}"}]},
                headers={"X-Conversation-Id": cid},
            )
            assert resp.status == 200, await resp.text()
            fingerprints.append(resp.headers["X-Prefix-Fingerprint"])
            await idle(sidecar)
    assert changes(fingerprints) == [5]
    [request] = summariser.requests
    assert request["object"] == "convostore.summary_request"
    assert (request["first_turn"], request["last_turn"]) == (1, 2)
    assert request["conversation_id"].startswith("conv_")
    if route != "responses":
        assert request["conversation_id"] == cid
    assert [i["role"] for i in request["items"]] == ["user", "assistant", "user", "assistant"]
    assert request["transcript"].startswith("user: question 1\nassistant: echo: question 1")
    assert request["template_summary"].startswith("Summary of turns 1-2:\n- user: question 1")
    last = turn_requests(engine, f"/v1/{'responses' if api == 'responses' else 'chat/completions'}")[-1]
    system = last["instructions"] if api == "responses" else last["messages"][0]["content"]
    assert system == "Summary of turns 1-2:\nThey talked about turns 1 to 2."
    metrics = await (await sidecar.get("/convostore/metrics")).text()
    assert sample(metrics, "convostore_summaries_total", summariser="http") == 1


@pytest.mark.parametrize("failure", ["503", "no summary", "too long", "huge answer", "too slow"])
async def test_a_failing_summariser_leaves_the_template_summary_counted(
    make_sidecar: Any,
    engine: TestServer,
    tmp_path: Path,
    redis_url: str,
    endpoint: tuple[SummaryEndpoint, str],
    failure: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    summariser, url = endpoint
    if failure == "503":
        summariser.status = 503
    elif failure == "no summary":
        summariser.answer = {"summary": "  "}
    elif failure == "too long":  # a summary longer than the turns it replaces defeats its purpose
        summariser.answer = {"summary": "x" * (summarisers_remote.MAX_SUMMARY_BYTES + 1)}
    elif failure == "huge answer":  # not even read to its end
        summariser.answer = {"summary": "ok", "padding": "x" * summarisers_remote.MAX_ANSWER_BYTES}
    else:
        monkeypatch.setattr(summarisers_remote, "HTTP_SUMMARY_TIMEOUT", 0.2)
        summariser.delay = 1.0
    policy = POLICY.format(summariser="http", url=url)
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path, redis_url, policy)
    _, fingerprints = await chain(sidecar, range(1, 6))
    assert changes(fingerprints) == [5]
    assert len(summariser.requests) == 1  # the failure is stored as the template: never asked again
    system = turn_requests(engine)[-1]["instructions"]
    assert system.startswith("Summary of turns 1-2:\n- user: question 1\n- assistant: echo: question 1")
    metrics = await (await sidecar.get("/convostore/metrics")).text()
    assert sample(metrics, "convostore_summary_failures_total", summariser="http") == 1
    assert sample(metrics, "convostore_summaries_total", summariser="template") == 1


async def test_the_budget_folds_at_once_with_a_stored_template_summary(
    make_sidecar: Any,
    engine: TestServer,
    tmp_path: Path,
    redis_url: str,
    endpoint: tuple[SummaryEndpoint, str],
) -> None:
    # A summariser slower than the conversation: when waiting for it would put the prompt over the budget,
    # the template summary is stored and sent at once, and the endpoint's later answer changes nothing.
    summariser, url = endpoint
    summariser.delay = 1.0
    # 470: what the template folds always fit in, and less than five of these turns verbatim (measured on
    # the fake engine's /tokenize).
    policy = POLICY.format(summariser="http", url=url) + "    max_input_tokens: 470\n"
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path, redis_url, policy)
    previous, systems = None, []
    for n in range(1, 7):
        body: dict[str, Any] = {"model": "m", "input": f"question {n} " + "word " * 60}
        if previous:
            body["previous_response_id"] = previous
        resp = await sidecar.post("/v1/responses", json=body)  # truncation "disabled": still no 400
        assert resp.status == 200, await resp.text()
        assert int(resp.headers["X-Estimated-Input-Tokens"]) <= 470
        previous = (await resp.json())["id"]
        systems.append(turn_requests(engine)[-1].get("instructions") or "")
    await idle(sidecar)
    assert summariser.requests  # it was asked, and answered too late
    assert systems[3] == ""  # turn 4 waits for the summary: everything verbatim, within the budget
    template = "Summary of turns 1-2:\n- user: question 1"
    assert systems[4].startswith(template) and systems[5].startswith(systems[4].split("\n\n")[0])
    metrics = await (await sidecar.get("/convostore/metrics")).text()
    # Both blocks were folded at once with the template, and the endpoint's late answers were not kept.
    assert sample(metrics, "convostore_summaries_total", summariser="template") == 2
    assert sample(metrics, "convostore_summaries_total", summariser="http") == 0


async def test_the_session_api_resolves_with_the_stored_summaries(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, redis_url: str
) -> None:
    policy = POLICY.format(summariser="upstream", url="null")
    sidecar = await sidecar_with(make_sidecar, engine, tmp_path, redis_url, policy, api="chat")
    last, fingerprints = await chain(sidecar, range(1, 6))
    sent = turn_requests(engine, "/v1/chat/completions")[-1]["messages"]
    resolved = await (await sidecar.get("/v1/sessions/resolve", params={"previous_response_id": last})).json()
    # What a gateway gets is what the proxy sent: the stored summary, then the verbatim turns.
    assert resolved["messages"][0] == sent[0]
    assert resolved["messages"][0]["content"].startswith("Summary of turns 1-2:\necho: ")
    assert resolved["messages"][1:4] == sent[1:4]
    assert resolved["prefix_fingerprint"] == fingerprints[-1]
    session = await (await sidecar.get(f"/v1/sessions/{resolved['conversation_id']}")).json()
    assert session["prefix_fingerprint"] == fingerprints[-1]
    assert len(session["items"]) == 10  # trimming shapes what is sent, never what is stored


async def test_a_summary_being_written_at_shutdown_is_cancelled_and_written_by_the_next_fold(
    make_sidecar: Any,
    engine: TestServer,
    tmp_path: Path,
    endpoint: tuple[SummaryEndpoint, str],
    redis_server: Any,
) -> None:
    summariser, url = endpoint
    summariser.delay = 60.0  # still writing when the sidecar stops
    policy = POLICY.format(summariser="http", url=url)
    first = await sidecar_with(make_sidecar, engine, tmp_path, redis_server.url, policy)
    previous = None
    for n in range(1, 5):  # keep 2, blocks of 2: turns 1-2 fall due at turn 4
        body: dict[str, Any] = {"model": "m", "input": f"question {n}", "previous_response_id": previous}
        resp = await first.post("/v1/responses", json={k: v for k, v in body.items() if v is not None})
        assert resp.status == 200, await resp.text()
        previous = (await resp.json())["id"]
    for _ in range(100):
        if summariser.requests:
            break
        await asyncio.sleep(0.05)
    assert len(summariser.requests) == 1
    assert first.app is not None
    writer = first.app[CONTEXT].summary_writer
    async with asyncio.timeout(10):  # the app's cleanup cancels the write instead of waiting a minute
        await first.close()
    assert not writer._running

    summariser.delay = 0.0
    second = await sidecar_with(make_sidecar, engine, tmp_path, redis_server.url, policy)
    resp = await second.post(
        "/v1/responses", json={"model": "m", "input": "question 5", "previous_response_id": previous}
    )
    assert resp.status == 200, await resp.text()
    await idle(second)
    assert [r["first_turn"] for r in summariser.requests] == [1, 1]  # the same block, written this time


async def test_a_turn_with_store_false_reads_summaries_but_writes_none(
    make_sidecar: Any,
    engine: TestServer,
    tmp_path: Path,
    endpoint: tuple[SummaryEndpoint, str],
    redis_url: str,
) -> None:
    summariser, url = endpoint
    sidecar = await sidecar_with(
        make_sidecar, engine, tmp_path, redis_url, POLICY.format(summariser="http", url=url)
    )
    last, _ = await chain(sidecar, range(1, 4))  # keep 2, blocks of 2: turns 1-2 fall due at turn 4
    unstored = {"model": "m", "input": "question 4", "previous_response_id": last, "store": False}
    resp = await sidecar.post("/v1/responses", json=unstored)
    assert resp.status == 200, await resp.text()
    await idle(sidecar)
    assert summariser.requests == []  # nothing summarised, nothing stored for it
    await chain(sidecar, [4], previous=last)  # the same turn, stored: now the block is summarised
    assert [r["first_turn"] for r in summariser.requests] == [1]
