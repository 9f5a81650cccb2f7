"""Background runs against their adversaries: a reaper taking over a runner that stalled just past its lease,
the run's event log outliving (or not) its response, a store failing at the runner's last write, deletes.

The races are made deterministic by proxies on the runner's store that stall one call, a 300 ms lease, and
a second Runner (another owner) standing in for another replica's reaper."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sidecar.appkeys import STORE
from sidecar.auth import DEFAULT_TENANT
from sidecar.runs.context import RUNS
from sidecar.runs.reaper import reap_once
from sidecar.runs.runner import Runner
from sidecar.store.base import StoreDown
from tests.conformance import assert_event_sequence
from tests.fixtures.fake_engine import CONFIG_KEY
from tests.integration.conftest import SidecarFactory
from tests.integration.responses_stack import parse_sse
from tests.integration.test_background import slow


class Proxy:
    """Delegates every store call to `inner`; subclasses intercept one."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def create_background(sidecar: Any, text: str = "race me", **extra: Any) -> str:
    body = {"model": "m", "input": text, "background": True, **extra}
    resp = await sidecar.post("/v1/responses", json=body)
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["id"])


async def stored(sidecar: Any, response_id: str) -> dict[str, Any]:
    resp = await sidecar.get(f"/v1/responses/{response_id}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def logged(sidecar: Any, response_id: str, timeout: float = 5) -> list[dict[str, Any]]:
    resp = await asyncio.wait_for(
        sidecar.get(f"/v1/responses/{response_id}", params={"stream": "true"}), timeout
    )
    assert resp.status == 200, await resp.text()
    return parse_sse(await asyncio.wait_for(resp.read(), timeout))


def store_of(sidecar: Any) -> Any:
    return sidecar.app[STORE]


async def runner_done(sidecar: Any) -> None:
    for _ in range(250):
        if not sidecar.app[RUNS].running:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the runner never ended")


async def wait_lease_lapsed(store: Any, response_id: str) -> None:
    for _ in range(200):
        run = await store.read_run(DEFAULT_TENANT, response_id)
        if run is not None and not run.leased:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the lease never lapsed")


# -- 1. a reaper racing a runner that stalled just past its lease -----------------------------------------


async def test_a_reaper_racing_a_late_runners_store_logs_what_was_stored(
    make_sidecar: SidecarFactory, engine: TestServer, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sidecar.runs.runner.LEASE_MS", 300)  # the stall outlives the lease sooner
    sidecar = await make_sidecar(redis_url=redis_server.url, upstream=str(engine.make_url("")))
    store = sidecar.app[STORE]
    gate, stalled, runner_stored = asyncio.Event(), asyncio.Event(), asyncio.Event()

    class StallingRunnerStore(Proxy):  # the runner's replica stalls just before it stores its turn
        async def append_turn(self, turn: Any) -> Any:
            stalled.set()
            await gate.wait()
            try:
                return await self.inner.append_turn(turn)
            finally:
                runner_stored.set()

    class ReaperStore(Proxy):  # the other replica's reaper: the runner's write lands right after its look
        async def resolve_response(self, *args: Any) -> Any:
            found = await self.inner.resolve_response(*args)
            gate.set()
            await runner_stored.wait()
            return found

    sidecar.app[RUNS].store = StallingRunnerStore(store)
    response_id = await create_background(sidecar)
    await asyncio.wait_for(stalled.wait(), 5)
    await wait_lease_lapsed(store, response_id)

    other_replica = Runner(store)  # another replica's runner: another owner, its reaper
    assert await reap_once(ReaperStore(store), other_replica) == 1
    while sidecar.app[RUNS].running:  # the late runner ends too
        await asyncio.sleep(0.02)

    body = await stored(sidecar, response_id)
    events = await logged(sidecar, response_id)
    assert events[-1]["response"]["status"] == body["status"], "stored response and event log disagree"


async def test_a_runner_stalled_after_storing_has_logged_its_events_for_the_reaper(
    make_sidecar: SidecarFactory, engine: TestServer, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sidecar.runs.runner.LEASE_MS", 300)
    sidecar = await make_sidecar(redis_url=redis_server.url, upstream=str(engine.make_url("")))
    store = sidecar.app[STORE]
    gate, stalled = asyncio.Event(), asyncio.Event()

    class StallingRunnerStore(Proxy):  # stored its turn, stalls before it logs its last events
        async def finish_run(self, *args: Any) -> Any:
            stalled.set()
            await gate.wait()
            return await self.inner.finish_run(*args)

    sidecar.app[RUNS].store = StallingRunnerStore(store)
    response_id = await create_background(sidecar, "hello there")
    await asyncio.wait_for(stalled.wait(), 5)
    await wait_lease_lapsed(store, response_id)
    assert await reap_once(store, Runner(store)) == 1
    gate.set()
    while sidecar.app[RUNS].running:
        await asyncio.sleep(0.02)

    body = await stored(sidecar, response_id)
    events = await logged(sidecar, response_id)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == body["output"][0]["content"][0]["text"], "the log's deltas lack the runner's last batch"


# -- 2. the event log expiring before the response -------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_response_outliving_its_log_still_streams_and_cancels(
    backend: str, request: pytest.FixtureRequest, make_sidecar: SidecarFactory, engine: TestServer
) -> None:
    url = "memory://" if backend == "memory" else request.getfixturevalue("redis_server").url
    sidecar = await make_sidecar(redis_url=url, upstream=str(engine.make_url("")), ttl_seconds=2)
    response_id = await create_background(sidecar, "keep me")
    while (await stored(sidecar, response_id))["status"] != "completed":
        await asyncio.sleep(0.05)
    # The conversation goes on: each turn chained from the background response refreshes its TTL.
    for _ in range(6):
        await asyncio.sleep(0.5)
        resp = await sidecar.post(
            "/v1/responses", json={"model": "m", "input": "more", "previous_response_id": response_id}
        )
        assert resp.status == 200, await resp.text()
    response = await stored(sidecar, response_id)  # 3 s on: the response lives, its log does not
    assert response["status"] == "completed"
    assert await store_of(sidecar).read_run(DEFAULT_TENANT, response_id) is None
    resp = await asyncio.wait_for(
        sidecar.get(f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": "2"}), 5
    )
    assert resp.status == 200, await resp.text()
    [terminal] = parse_sse(await resp.read())  # the numbers logged are gone: the end, which says it all
    assert terminal["type"] == "response.completed" and terminal["sequence_number"] == 3
    assert terminal["response"]["output"] == response["output"]
    events = await logged(sidecar, response_id)  # from the start: rebuilt from the stored response
    assert_event_sequence(events)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == response["output"][0]["content"][0]["text"]
    cancelled = await sidecar.post(f"/v1/responses/{response_id}/cancel")
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "completed"


# -- the store failing at the runner's very last write ---------------------------------------------------


async def test_a_run_whose_finish_failed_is_ended_by_a_reaper(
    make_sidecar: SidecarFactory, engine: TestServer, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sidecar.runs.runner.LEASE_MS", 300)
    sidecar = await make_sidecar(redis_url=redis_server.url, upstream=str(engine.make_url("")))
    store = sidecar.app[STORE]

    class BlipAtFinish(Proxy):  # Redis restarts (or fails over) between the runner's store and its finish
        async def finish_run(self, *args: Any) -> Any:
            raise StoreDown("connection refused")

    sidecar.app[RUNS].store = BlipAtFinish(store)
    response_id = await create_background(sidecar, "blip")
    while sidecar.app[RUNS].running:
        await asyncio.sleep(0.02)
    # The lease lapses; the replica's own reaper (every second) finds the run and logs the stored end.
    events = await logged(sidecar, response_id, timeout=10)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["status"] == (await stored(sidecar, response_id))["status"] == "completed"
    run = await store.read_run(DEFAULT_TENANT, response_id)
    assert run is not None and run.finished


async def test_a_redis_restart_mid_run_is_survived(
    make_sidecar: SidecarFactory, engine: TestServer, redis_aof_server: Any
) -> None:
    sidecar = await make_sidecar(redis_url=redis_aof_server.url, upstream=str(engine.make_url("")))
    slow(engine, 0.1, 30)
    response_id = await create_background(sidecar, "survive a restart")
    await asyncio.sleep(1.0)
    redis_aof_server.kill()
    redis_aof_server.restart()  # back at once, with every key (appendonly, fsync always)
    while sidecar.app[RUNS].running:
        await asyncio.sleep(0.05)
    body = await stored(sidecar, response_id)
    assert body["status"] == "completed", "a sub-second Redis restart fails a run whose lease never lapsed"
    events = await logged(sidecar, response_id)
    assert_event_sequence(events)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "echo: survive a restart"


@pytest.mark.parametrize("deleted", ["response", "conversation"])
@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_deleted_background_response_is_not_streamed_from_its_log(
    backend: str,
    deleted: str,
    request: pytest.FixtureRequest,
    make_sidecar: SidecarFactory,
    engine: TestServer,
) -> None:
    url = "memory://" if backend == "memory" else request.getfixturevalue("redis_server").url
    sidecar = await make_sidecar(redis_url=url, upstream=str(engine.make_url("")))
    conversation = (await (await sidecar.post("/v1/conversations", json={})).json())["id"]
    response_id = await create_background(sidecar, "secret words", conversation=conversation)
    while (await stored(sidecar, response_id))["status"] != "completed":
        await asyncio.sleep(0.05)
    path = f"/v1/responses/{response_id}" if deleted == "response" else f"/v1/conversations/{conversation}"
    assert (await sidecar.delete(path)).status == 200
    assert (await sidecar.get(f"/v1/responses/{response_id}")).status == 404
    resp = await sidecar.get(f"/v1/responses/{response_id}", params={"stream": "true"})
    assert resp.status == 404 and b"secret" not in await resp.read()
    assert await store_of(sidecar).read_run(DEFAULT_TENANT, response_id) is None  # its log went with it


class StallsMidRun(Proxy):
    """The runner's replica stalls at its first logged delta (a GC pause, a slow store) until `gate`;
    whether it gives its turn back is noted."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gate, self.stalled, self.gave_back = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def append_run_events(self, response_id: str, owner: str, events: Any, lease_ms: int) -> Any:
        if events and not self.stalled.is_set() and any(b"output_text.delta" in e for _, e in events):
            self.stalled.set()
        if self.stalled.is_set():
            await self.gate.wait()
        return await self.inner.append_run_events(response_id, owner, events, lease_ms)

    async def abandon_turn(self, *args: Any) -> Any:
        try:
            return await self.inner.abandon_turn(*args)
        finally:
            self.gave_back.set()


@pytest.mark.parametrize("next_turn", ["stored first", "running meanwhile"])
async def test_a_runner_that_lost_its_run_keeps_the_reservation_the_reaper_stores_into(
    next_turn: str,
    make_sidecar: SidecarFactory,
    engine: TestServer,
    redis_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sidecar.runs.runner.LEASE_MS", 300)
    sidecar = await make_sidecar(redis_url=redis_server.url, upstream=str(engine.make_url("")))
    store = sidecar.app[STORE]
    runner_store = StallsMidRun(store)
    other: asyncio.Task[Any] | None = None

    class ReaperStore(Proxy):  # between the reaper's look and its store: the runner wakes, hears it lost
        async def resolve_response(self, *args: Any) -> Any:
            found = await self.inner.resolve_response(*args)
            runner_store.gate.set()
            await runner_done(sidecar)  # a give-back would have come by now
            # ...and the conversation's next turn (another client, a retry) takes the next index.
            nonlocal other
            body = {"model": "m", "input": "meanwhile", "previous_response_id": previous}
            if next_turn == "stored first":
                engine.app[CONFIG_KEY].mode = "ok"
            other = asyncio.create_task(sidecar.post("/v1/responses", json=body))
            if next_turn == "stored first":
                await asyncio.shield(other)
            else:
                await asyncio.sleep(0.3)  # its index is reserved, its (slow) engine call under way
            return found

    first = await sidecar.post("/v1/responses", json={"model": "m", "input": "hi"})
    previous = (await first.json())["id"]  # a continuation: its record index is reserved up front
    slow(engine, 0.05, 40)
    sidecar.app[RUNS].store = runner_store
    response_id = await create_background(sidecar, "a long answer to lose", previous_response_id=previous)
    await asyncio.wait_for(runner_store.stalled.wait(), 5)
    await wait_lease_lapsed(store, response_id)
    assert await reap_once(ReaperStore(store), Runner(store)) == 1
    assert not runner_store.gave_back.is_set(), "the late runner gave back the index the reaper stores into"
    assert other is not None
    answer = await other
    body = await answer.json()
    assert answer.status == 200, body
    assert (await sidecar.get(f"/v1/responses/{body['id']}")).status == 200, "the other turn was not stored"
    events = await logged(sidecar, response_id)
    resp = await sidecar.get(f"/v1/responses/{response_id}")
    assert resp.status == 200, "the log says failed, but the response was never stored"
    assert (await resp.json())["status"] == events[-1]["response"]["status"] == "failed"
