"""Background responses across two sidecar processes sharing one redis-server: poll from the
other replica, resume a dropped stream there, cancel there, and a SIGKILLed runner settled there."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from sidecar.runs.lease import LEASE_MS, REAP_INTERVAL_SECONDS
from tests.conformance import assert_response_resource
from tests.fixtures.engine_process import FakeEngineProcess
from tests.fixtures.redis_servers import RedisServer
from tests.fixtures.sidecar_process import SidecarProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    # One process per replica: a SIGKILL must hit the process running the response, not a supervisor.
    monkeypatch.setenv("CONVOSTORE_WORKERS", "1")
    engine = FakeEngineProcess(mode="slow", delay=0.15, deltas=40)
    first = second = None
    try:
        first = SidecarProcess(upstream=engine.url, upstream_api="responses", redis_url=redis_server.url)
        second = SidecarProcess(upstream=engine.url, upstream_api="responses", redis_url=redis_server.url)
        yield first, second
    finally:
        for process in (first, second):
            if process is not None:
                process.close()
        engine.stop()


def sdk(process: SidecarProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{process.url}/v1", api_key="sk-test", max_retries=0)


def raw_response(process: SidecarProcess, response_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{process.url}/v1/responses/{response_id}", timeout=5) as resp:
        body: dict[str, Any] = orjson.loads(resp.read())
    return body


async def poll(client: openai.AsyncOpenAI, response_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        assert time.monotonic() < deadline, f"still {response.status}"
        await asyncio.sleep(0.1)


PROMPT = "a background answer across replicas"
ANSWER = "echo: " + PROMPT


async def test_poll_resume_and_chain_from_the_other_replica(
    replicas: tuple[SidecarProcess, SidecarProcess],
) -> None:
    first, second = (sdk(p) for p in replicas)
    stream = await first.responses.create(model="m", input=PROMPT, background=True, stream=True)
    seen = []
    async for event in stream:
        seen.append(event)
        if len(seen) == 6:
            break
    await stream.close()
    response_id = seen[0].response.id
    resumed = await second.responses.retrieve(response_id, stream=True, starting_after=5)
    rest = [event async for event in resumed]
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(len(numbers)))
    assert rest[-1].type == "response.completed"
    assert "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta") == ANSWER
    done = await poll(second, response_id)
    assert done.output_text == ANSWER and done.background is True
    assert_response_resource(raw_response(replicas[1], response_id))
    chained = await second.responses.create(model="m", input="next", previous_response_id=response_id)
    assert chained.status == "completed"
    await first.close()
    await second.close()


async def test_cancel_on_the_other_replica_stops_the_run(
    replicas: tuple[SidecarProcess, SidecarProcess],
) -> None:
    first, second = (sdk(p) for p in replicas)
    created = await first.responses.create(model="m", input=PROMPT, background=True)
    await asyncio.sleep(1.0)
    cancelled = await second.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert cancelled.output_text and ANSWER.startswith(cancelled.output_text)
    assert len(cancelled.output_text) < len(ANSWER)
    await asyncio.sleep(1.0)  # nothing changes after: the engine request was closed, not left running
    after = await first.responses.retrieve(created.id)
    assert after.status == "cancelled" and after.output_text == cancelled.output_text
    await first.close()
    await second.close()


async def test_a_sigkilled_runner_is_settled_failed_by_the_other_replica(
    replicas: tuple[SidecarProcess, SidecarProcess],
) -> None:
    runner, survivor = replicas
    first, second = sdk(runner), sdk(survivor)
    created = await first.responses.create(model="m", input=PROMPT, background=True)
    await asyncio.sleep(1.0)
    runner.kill()
    killed = time.monotonic()
    done = await poll(second, created.id, timeout=LEASE_MS / 1000 + 10)
    assert time.monotonic() - killed < LEASE_MS / 1000 + 2 * REAP_INTERVAL_SECONDS + 1
    assert done.status == "failed"
    assert done.error is not None
    assert done.output_text and ANSWER.startswith(done.output_text)
    assert_response_resource(raw_response(survivor, created.id))
    await first.close()
    await second.close()
