"""Background responses in-process: through the openai SDK against the fake engine in slow
mode, on memory and on a real redis-server — poll, chain, stream and resume, cancel, an orphan settled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.runs.context import RUNS
from sidecar.runs.lease import LEASE_MS
from sidecar.store.base import StoreDown
from tests.conformance import assert_event_sequence, assert_response_resource
from tests.fixtures.fake_engine import CONFIG_KEY, recorded
from tests.integration.conftest import SidecarFactory

Client = TestClient[Any, Any]


def slow(engine: TestServer, delay: float = 0.05, deltas: int = 12) -> None:
    """The engine's answers come in `deltas` pieces, `delay` seconds apart (headers do not reach it)."""
    config = engine.app[CONFIG_KEY]
    config.mode, config.delay, config.deltas = "slow", delay, deltas


@pytest.fixture(params=["memory", "redis"])
async def stack(
    request: pytest.FixtureRequest, make_sidecar: SidecarFactory, engine: TestServer
) -> AsyncIterator[tuple[Client, TestServer, openai.AsyncOpenAI]]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    sidecar = await make_sidecar(redis_url=url, upstream=str(engine.make_url("")))
    client = openai.AsyncOpenAI(base_url=str(sidecar.make_url("/v1")), api_key="sk-test", max_retries=0)
    yield sidecar, engine, client
    await client.close()


async def poll(client: openai.AsyncOpenAI, response_id: str, timeout: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        assert asyncio.get_running_loop().time() < deadline, f"still {response.status}"
        await asyncio.sleep(0.05)


async def raw_get(sidecar: Client, response_id: str) -> dict[str, Any]:
    resp = await sidecar.get(f"/v1/responses/{response_id}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_background_returns_at_once_then_completes_and_chains(stack: Any) -> None:
    sidecar, engine, client = stack
    slow(engine)
    created = await client.responses.create(model="m", input="hello there", background=True)
    assert created.status in ("queued", "in_progress")
    assert created.background is True
    assert_response_resource(await raw_get(sidecar, created.id))  # progress validates too
    done = await poll(client, created.id)
    assert done.status == "completed"
    assert done.output_text == "echo: hello there"
    assert done.background is True
    assert_response_resource(await raw_get(sidecar, created.id))
    chained = await client.responses.create(model="m", input="again", previous_response_id=created.id)
    assert chained.output_text == "echo: again"
    sent = orjson.dumps(recorded(engine.app, "/v1/responses")[-1]["body"]["input"])
    assert b"hello there" in sent and b"echo: hello there" in sent  # the background turn is history
    assert sidecar.app[RUNS].running == 0


async def test_background_needs_store(stack: Any) -> None:
    _, _, client = stack
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="m", input="x", background=True, store=False)
    assert info.value.body["param"] == "background"  # type: ignore[index]


async def test_a_background_stream_is_whole_and_resumes_after_any_event(stack: Any) -> None:
    sidecar, engine, client = stack
    slow(engine)
    stream = await client.responses.create(model="m", input="resume me please", background=True, stream=True)
    seen = []
    async for event in stream:
        seen.append(event)
        if len(seen) == 4:
            break  # the client drops the stream: the run goes on
    await stream.close()
    response_id = seen[0].response.id
    resumed = await client.responses.retrieve(response_id, stream=True, starting_after=3)
    rest = [event async for event in resumed]
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(len(numbers)))
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
    assert text == "echo: resume me please"
    # The whole log again, from the start, validates as one stream.
    resp = await sidecar.get(f"/v1/responses/{response_id}", params={"stream": "true"})
    events = [
        orjson.loads(line[6:]) for line in (await resp.read()).splitlines() if line.startswith(b"data: ")
    ]
    assert_event_sequence(events)
    assert (await poll(client, response_id)).output_text == "echo: resume me please"


async def test_cancel_stops_the_engine_and_stores_the_output_so_far(stack: Any) -> None:
    sidecar, engine, client = stack
    slow(engine, 0.2, 40)
    created = await client.responses.create(model="m", input="a long answer please", background=True)
    while (await raw_get(sidecar, created.id))["status"] == "queued":
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    cancelled = await client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    partial = cancelled.output_text
    assert partial and "echo: a long answer please".startswith(partial) and len(partial) < 26
    stored = await raw_get(sidecar, created.id)
    assert stored["status"] == "cancelled"
    assert_response_resource(stored)
    # Cancelling again returns it unchanged.
    again = await client.responses.cancel(created.id)
    assert again.status == "cancelled" and again.output_text == partial
    assert sidecar.app[RUNS].running == 0


async def test_cancel_of_a_foreground_response_is_400_and_unknown_is_404(stack: Any) -> None:
    _, _, client = stack
    done = await client.responses.create(model="m", input="hi")
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(done.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.cancel("resp_000000000000000000000000000000")
    with pytest.raises(openai.BadRequestError):
        await client.responses.retrieve(done.id, stream=True)


async def test_a_finished_background_response_cancels_to_itself(stack: Any) -> None:
    _, _, client = stack
    created = await client.responses.create(model="m", input="quick", background=True)
    done = await poll(client, created.id)
    assert (await client.responses.cancel(created.id)).model_dump() == done.model_dump()


class _Unreachable:
    """A store that is gone for one replica (as a SIGKILL or a partition would leave it)."""

    def __getattr__(self, name: str) -> Any:
        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreDown("gone")

        return down


async def test_an_orphaned_run_is_settled_failed_by_another_replica(
    make_sidecar: SidecarFactory, engine: TestServer, redis_server: Any
) -> None:
    upstream = str(engine.make_url(""))
    first = await make_sidecar(redis_url=redis_server.url, upstream=upstream)
    second = await make_sidecar(redis_url=redis_server.url, upstream=upstream)
    client = openai.AsyncOpenAI(base_url=str(first.make_url("/v1")), api_key="sk-test", max_retries=0)
    other = openai.AsyncOpenAI(base_url=str(second.make_url("/v1")), api_key="sk-test", max_retries=0)
    slow(engine, 0.3, 40)
    created = await client.responses.create(model="m", input="orphan me", background=True)
    while (await raw_get(second, created.id))["status"] == "queued":
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    first.app[RUNS].store = _Unreachable()  # the runner can write no more
    started = asyncio.get_running_loop().time()
    done = await poll(other, created.id, timeout=LEASE_MS / 1000 + 8)
    assert asyncio.get_running_loop().time() - started < LEASE_MS / 1000 + 3
    assert done.status == "failed"
    assert done.error is not None
    assert done.output_text and "echo: orphan me".startswith(done.output_text)
    assert_response_resource(await raw_get(second, created.id))
    await client.close()
    await other.close()
