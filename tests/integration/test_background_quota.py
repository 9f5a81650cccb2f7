"""The per-tenant limit on background responses running at once (policy `tenants.<t>.quota.
background_responses`): counted in the store across replicas, released when a run finishes, is cancelled or
is reaped; over it a 429 rate_limit_exceeded with Retry-After and nothing stored. Also the runs' metrics."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.policy import PolicyError, validate_policy
from sidecar.runs.context import RUNS
from sidecar.runs.lease import LEASE_MS
from tests.fixtures.fake_engine import recorded
from tests.fixtures.redis_servers import RedisServer
from tests.integration.test_background import _Unreachable, poll, slow
from tests.integration.test_metrics_and_logs import sample
from tests.integration.test_quotas import policy_file, tenant_headers

Client = TestClient[Any, Any]


async def replicas(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, url: str, tenant: str, n: int
) -> list[Client]:
    policy = policy_file(tmp_path, f"tenants:\n  {tenant}:\n    quota: {{background_responses: 2}}\n")
    upstream = str(engine.make_url("")).rstrip("/")
    return [
        await make_sidecar(upstream=upstream, redis_url=url, auth="trusted_header", config_path=policy)
        for _ in range(n)
    ]


async def start(sidecar: Client, tenant: str, text: str, key: str | None = None) -> Any:
    headers = {**tenant_headers(tenant), **({"Idempotency-Key": key} if key else {})}
    return await sidecar.post(
        "/v1/responses", json={"model": "m", "input": text, "background": True}, headers=headers
    )


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for these replicas alone: on the session's, any other sidecar still running (an
    end-to-end test's process) may reap their orphans, and its counters and logs are not theirs."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


async def eventually(measure: Callable[[], Awaitable[float]], expected: float, seconds: float = 10.0) -> bool:
    """Whether `measure()` reaches `expected` within `seconds` (it is asked every 50 ms)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (value := await measure()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still {value}, not {expected}, after {seconds} s")
        await asyncio.sleep(0.05)
    return True


def sdk(sidecar: Client, tenant: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(sidecar.make_url("/v1")),
        api_key="sk-test",
        max_retries=0,
        default_headers=tenant_headers(tenant),
    )


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_running_background_responses_are_limited_per_tenant_and_released(
    request: pytest.FixtureRequest, make_sidecar: Any, engine: TestServer, tmp_path: Path, store: str
) -> None:
    tenant = f"bg-{os.urandom(3).hex()}"
    url = "memory://" if store == "memory" else request.getfixturevalue("redis_server").url
    # On Redis two replicas share the count; memory:// is one process.
    sidecars = await replicas(make_sidecar, engine, tmp_path, url, tenant, 1 if store == "memory" else 2)
    first, second = sidecars[0], sidecars[-1]
    slow(engine, 0.1, 40)  # 4 s each
    one, two = await start(first, tenant, "one"), await start(second, tenant, "two")
    assert (one.status, two.status) == (200, 200), await one.text()
    while len(recorded(engine.app, "/v1/responses")) < 2:  # both runs have called the engine
        await asyncio.sleep(0.02)
    refused = await start(first, tenant, "three", key="third-try")
    error = (await refused.json())["error"]
    assert refused.status == 429 and error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "2 background responses" in error["message"]
    await asyncio.sleep(0.2)
    assert len(recorded(engine.app, "/v1/responses")) == 2  # no engine call, no run, nothing stored
    assert sum(s.app[RUNS].running for s in sidecars) == 2
    other = await start(second, f"other-{tenant}", "another tenant")  # other tenants are not counted
    assert other.status == 200
    # A cancel releases a slot: the refused request runs with the same key (it kept nothing, not even
    # its claim on the key).
    client = sdk(second, tenant)
    cancelled = await client.responses.cancel((await one.json())["id"])
    assert cancelled.status == "cancelled"
    again = await start(first, tenant, "three", key="third-try")
    assert again.status == 200, await again.text()
    # A finished run releases its slot too.
    slow(engine, 0.0, 2)
    for done in (two, again):
        assert (await poll(client, (await done.json())["id"], timeout=20)).status == "completed"
    quick = [await start(sidecars[n % len(sidecars)], tenant, f"quick {n}") for n in range(2)]
    assert [q.status for q in quick] == [200, 200]
    for q in quick:
        await poll(client, (await q.json())["id"])
    async with sdk(second, f"other-{tenant}") as other_client:
        await poll(other_client, (await other.json())["id"], timeout=20)
    await client.close()
    texts = [await (await s.get("/convostore/metrics")).text() for s in sidecars]

    def total(name: str, **labels: str) -> float:
        return sum(sample(text, name, **labels) for text in texts)

    assert total("convostore_quota_rejections_total", kind="background_responses", tenant_class="listed") == 1
    assert total("convostore_background_responses_started_total") == 6
    assert total("convostore_background_responses_finished_total", status="completed") == 5
    assert total("convostore_background_responses_finished_total", status="cancelled") == 1
    assert total("convostore_background_cancels_total") == 1
    assert total("convostore_background_responses_running") == 0
    assert tenant not in "".join(texts)


async def test_a_reaped_run_releases_its_slot(
    make_sidecar: Any, engine: TestServer, tmp_path: Path, own_redis: RedisServer
) -> None:
    tenant = f"reaped-{os.urandom(3).hex()}"
    first, second = await replicas(make_sidecar, engine, tmp_path, own_redis.url, tenant, 2)
    slow(engine, 0.2, 40)
    running = [await start(first, tenant, f"orphan {n}") for n in range(2)]
    assert [r.status for r in running] == [200, 200]
    assert (await start(second, tenant, "refused")).status == 429
    await asyncio.sleep(0.5)
    first.app[RUNS].store = _Unreachable()  # its replica is gone for the store
    client = sdk(second, tenant)
    for r in running:
        done = await poll(client, (await r.json())["id"], timeout=LEASE_MS / 1000 + 8)
        assert done.status == "failed"

    async def reaped() -> float:
        # Either replica's reaper may settle them (the first one's runner gave up on its store). A poller
        # sees `failed` once the turn is stored; the reaper releases the slot and counts the run after it.
        texts = [await (await s.get("/convostore/metrics")).text() for s in (first, second)]
        return sum(sample(text, "convostore_background_reaped_total") for text in texts)

    assert await eventually(reaped, 2)
    admitted = await start(second, tenant, "after the reaper")
    assert admitted.status == 200, await admitted.text()
    slow(engine, 0.0, 2)
    await poll(client, (await admitted.json())["id"], timeout=20)
    await client.close()


async def test_a_resumed_stream_is_counted(make_sidecar: Any, engine: TestServer) -> None:
    sidecar = await make_sidecar(upstream=str(engine.make_url("")), redis_url="memory://")
    created = await sidecar.post("/v1/responses", json={"model": "m", "input": "x", "background": True})
    response_id = (await created.json())["id"]
    for _ in range(2):
        resumed = await sidecar.get(f"/v1/responses/{response_id}", params={"stream": "true"})
        assert b"response.completed" in await resumed.read()
    metrics = await (await sidecar.get("/convostore/metrics")).text()
    assert sample(metrics, "convostore_background_streams_resumed_total") == 2


async def test_runs_log_start_finish_cancel_and_reap_with_their_ids(
    make_sidecar: Any, engine: TestServer, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="convostore.runs")
    upstream = str(engine.make_url(""))
    first = await make_sidecar(redis_url=own_redis.url, upstream=upstream, auth="trusted_header")
    second = await make_sidecar(redis_url=own_redis.url, upstream=upstream, auth="trusted_header")
    tenant = f"logged-{os.urandom(3).hex()}"
    client = sdk(second, tenant)
    slow(engine, 0.0, 2)
    done = (await (await start(first, tenant, "done")).json())["id"]
    await poll(client, done)
    slow(engine, 0.2, 40)
    cancelled = (await (await start(first, tenant, "cancelled")).json())["id"]
    orphan = (await (await start(first, tenant, "orphan")).json())["id"]
    await client.responses.cancel(cancelled)
    await asyncio.sleep(0.5)
    first.app[RUNS].store = _Unreachable()  # the orphan's replica is gone for the store
    for response_id in (done, cancelled, orphan):
        await poll(client, response_id, timeout=LEASE_MS / 1000 + 8)
    await client.close()

    def lines(message: str) -> dict[str, Any]:
        return {
            r.response_id: r  # type: ignore[attr-defined]
            for r in caplog.records
            if r.getMessage().startswith(message) and getattr(r, "tenant", None) == tenant
        }

    async def settled() -> float:  # the reaper logs after storing the run, which the poll already saw
        return float(orphan in lines("settled orphaned background response"))

    started = lines("background response started")
    assert set(started) == {done, cancelled, orphan}
    assert all(r.conversation_id for r in started.values())  # type: ignore[attr-defined]
    assert lines("background response cancelled").keys() == {cancelled}
    finished = {rid: r.status for rid, r in lines("background response finished").items()}  # type: ignore[attr-defined]
    assert finished[cancelled] == "cancelled"
    assert await eventually(settled, 1)


@pytest.mark.parametrize("value", [0, -1, "2", 1.5, True])
def test_the_background_quota_is_a_positive_integer(value: Any) -> None:
    with pytest.raises(PolicyError) as caught:
        validate_policy({"tenants": {"acme": {"quota": {"background_responses": value}}}})
    assert "background_responses" in str(caught.value)


def test_the_background_quota_is_accepted() -> None:
    validate_policy({"tenants": {"acme": {"quota": {"background_responses": 3}}}})
