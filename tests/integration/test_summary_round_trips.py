"""A turn under the `upstream` summariser folds with the stored summaries its resolve brought: one store round
trip resolves the turn (no second one for the summaries), on both store backends, and the engine gets the
stored summary's bytes. The session API's resolve likewise."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.appkeys import CONTEXT, STORE
from tests.fixtures.fake_engine import recorded
from tests.fixtures.redis_servers import RedisServer
from tests.integration.test_summarisers import turn_requests
from tests.store.conftest import Monitor

Client = TestClient[Any, Any]
POLICY = """
policies:
  default: {keep_last_turns: 2, summary_every_turns: 2, summariser: upstream}
"""
STORE_CALLS = (
    "begin_turn",
    "resolve_response",
    "resolve_conversation",
    "read_summaries",
    "add_summary",
    "append_turn",
)


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest) -> Iterator[RedisServer | None]:
    """A redis-server of this test's own, so its command counts are this sidecar's alone."""
    if request.param == "memory":
        yield None
        return
    with RedisServer() as own:
        yield own


@pytest.fixture
async def sidecar(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, server: RedisServer | None
) -> AsyncIterator[Client]:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    client: Client = await make_sidecar(
        upstream=str(engine.make_url("")).rstrip("/"),
        redis_url="memory://" if server is None else server.url,
        config_path=str(path),
    )
    yield client


def record_store_calls(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the store operations the sidecar calls from now on (each one round trip on Redis)."""
    assert client.app is not None
    store, calls = client.app[STORE], []
    for name in STORE_CALLS:
        original = getattr(store, name)

        async def recorded_call(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return await _original(*args, **kw)

        monkeypatch.setattr(store, name, recorded_call)
    return calls


async def turn(client: Client, n: int, previous: str | None) -> str:
    body: dict[str, Any] = {"model": "m", "input": f"question {n}"}
    if previous:
        body["previous_response_id"] = previous
    resp = await client.post("/v1/responses", json=body)
    assert resp.status == 200, await resp.text()
    response_id: str = (await resp.json())["id"]
    return response_id


async def test_a_turn_folds_with_the_summaries_its_resolve_brought(
    sidecar: Client, engine: TestServer, server: RedisServer | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sidecar.app is not None
    previous: str | None = None
    for n in range(1, 5):  # turn 4 leaves turns 1-2 to fold: the engine's summary of them is stored
        previous = await turn(sidecar, n, previous)
        await sidecar.app[CONTEXT].summary_writer.idle()
    assert previous is not None
    history = await sidecar.app[STORE].resolve_response("default", previous)
    assert history is not None and history.summaries is not None and len(history.summaries) == 1
    [summary] = history.summaries.values()

    calls = record_store_calls(sidecar, monkeypatch)
    monitor = Monitor([server.port]) if server is not None else None
    previous = await turn(sidecar, 5, previous)  # folds 1-2 with the stored summary; nothing new to summarise
    await sidecar.app[CONTEXT].summary_writer.idle()
    assert calls == ["begin_turn", "append_turn"]  # one round trip to resolve, one to store
    if monitor is not None:
        assert monitor.commands() == ["evalsha", "evalsha"]  # what the client sent: two scripts
    sent = turn_requests(engine)[-1]
    assert summary.decode() in sent["instructions"]  # the stored bytes, as stored
    assert sent["input"][0]["content"][0]["text"] == "question 3"  # turns 1-2 are folded

    # The session API's resolve folds the same way, in its one round trip.
    calls.clear()
    resolved = await sidecar.get("/v1/sessions/resolve", params={"previous_response_id": previous})
    assert resolved.status == 200
    assert calls == ["resolve_response"]
    messages = (await resolved.json())["messages"]
    assert summary.decode() in messages[0]["content"]
    assert len(recorded(engine.app, "/v1/responses")) == len(turn_requests(engine)) + 1  # one summary call
