"""Faults under load, on real processes: Redis SIGKILLed and restarted, a replica SIGKILLed mid-stream, the
engine restarted. Whatever happens, every turn acknowledged to a client (a 200, or a stream's
`response.completed`) resolves afterwards with its whole history; nothing else is a 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fixtures.engine_process import FakeEngineProcess
from tests.fixtures.redis_servers import RedisServer
from tests.fixtures.sidecar_process import SidecarProcess

pytestmark = pytest.mark.slow
CLIENTS = 16


@pytest.fixture
def engine() -> Iterator[FakeEngineProcess]:
    process = FakeEngineProcess()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def sidecar(redis_aof_server: RedisServer, engine: FakeEngineProcess) -> Iterator[SidecarProcess]:
    process = SidecarProcess(upstream=engine.url, upstream_api="responses", redis_url=redis_aof_server.url)
    try:
        yield process
    finally:
        process.close()


@dataclass
class Ledger:
    """What the clients were told: acknowledged response ids with their chain depth, and every status."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    slowest_refusal_s: float = 0.0
    stream_failures: int = 0


async def one_turn(
    http: aiohttp.ClientSession, base: str, previous: str | None, n: int, stream: bool, ledger: Ledger
) -> str | None:
    body: dict[str, Any] = {"model": "m", "input": f"turn {n}", "stream": stream}
    if previous:
        body["previous_response_id"] = previous
    started = time.monotonic()
    try:
        async with http.post(f"{base}/v1/responses", json=body, timeout=aiohttp.ClientTimeout(total=15)) as r:
            ledger.statuses[r.status] = ledger.statuses.get(r.status, 0) + 1
            if r.status != 200:
                ledger.slowest_refusal_s = max(ledger.slowest_refusal_s, time.monotonic() - started)
                await r.read()
                return None
            if not stream:
                return str((await r.json())["id"])
            events = [
                orjson.loads(line[6:])
                for line in (await r.read()).split(b"\n")
                if line.startswith(b"data: {")
            ]
            if events and events[-1]["type"] == "response.completed":
                return str(events[-1]["response"]["id"])
            ledger.stream_failures += 1
            return None
    except (TimeoutError, aiohttp.ClientError):
        ledger.statuses[-1] = ledger.statuses.get(-1, 0) + 1  # a dropped connection: not acknowledged
        return None


async def chain_until(bases: list[str], stop: asyncio.Event, ledger: Ledger, client: int) -> None:
    """One client chaining turns from its last acknowledged response, alternating stream and not."""
    previous, depth, n = None, 0, 0
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            n += 1
            base = bases[n % len(bases)]
            rid = await one_turn(http, base, previous, n, stream=(n + client) % 2 == 0, ledger=ledger)
            if rid is not None:
                previous, depth = rid, depth + 1
                ledger.acknowledged[rid] = depth
            else:
                await asyncio.sleep(0.05)


async def assert_all_acknowledged_resolve(base: str, ledger: Ledger) -> None:
    assert ledger.acknowledged, "no turn was acknowledged at all"
    async with aiohttp.ClientSession() as http:
        for rid, depth in ledger.acknowledged.items():
            async with http.get(f"{base}/v1/sessions/resolve", params={"previous_response_id": rid}) as r:
                assert r.status == 200, f"acknowledged {rid} is gone ({r.status})"
                messages = (await r.json())["messages"]
            assert len(messages) == 2 * depth, f"{rid}: {len(messages)} messages, expected {2 * depth}"


async def test_redis_killed_and_restarted_under_load_loses_no_acknowledged_turn(
    redis_aof_server: RedisServer, engine: FakeEngineProcess, sidecar: SidecarProcess
) -> None:
    ledger, stop = Ledger(), asyncio.Event()
    load = asyncio.gather(*(chain_until([sidecar.url], stop, ledger, c) for c in range(CLIENTS)))
    await asyncio.sleep(1.5)
    before_kill = len(ledger.acknowledged)
    redis_aof_server.kill()
    await asyncio.sleep(0.5)
    async with aiohttp.ClientSession() as http:  # pass-through keeps working while the store is down
        async with http.get(f"{sidecar.url}/v1/models") as r:
            assert r.status == 200
        async with http.post(f"{sidecar.url}/v1/responses", json={"model": "m", "input": "x"}) as r:
            assert r.status == 503 and (await r.json())["error"]["code"] == "store_unavailable"
    await asyncio.sleep(1.0)
    redis_aof_server.restart()
    await asyncio.sleep(2.0)
    stop.set()
    await load
    assert before_kill > 0 and len(ledger.acknowledged) > before_kill  # it recovered by itself
    assert ledger.statuses.get(500, 0) == 0 and ledger.statuses.get(503, 0) > 0, ledger.statuses
    assert ledger.slowest_refusal_s < 6, ledger.slowest_refusal_s  # bounded: no hang while Redis is gone
    await assert_all_acknowledged_resolve(sidecar.url, ledger)


async def test_a_replica_killed_mid_stream_leaves_the_other_serving_everything(
    redis_aof_server: RedisServer,
) -> None:
    engine = FakeEngineProcess(delay=0.3, deltas=6)  # streams of ~2 s: one is surely running at the kill
    first = SidecarProcess(upstream=engine.url, upstream_api="responses", redis_url=redis_aof_server.url)
    second = SidecarProcess(upstream=engine.url, upstream_api="responses", redis_url=redis_aof_server.url)
    try:
        ledger, stop = Ledger(), asyncio.Event()
        load = asyncio.gather(*(chain_until([first.url, second.url], stop, ledger, c) for c in range(8)))
        await asyncio.sleep(2.5)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{first.url}/v1/responses", json={"model": "m", "input": "cut me", "stream": True}
            ) as r,
        ):
            killed_id = r.headers["X-Response-Id"]
            await r.content.readline()
            first.kill()
            with pytest.raises(aiohttp.ClientError):
                await r.read()
        await asyncio.sleep(1.0)
        stop.set()
        await load
        await assert_all_acknowledged_resolve(second.url, ledger)
        async with aiohttp.ClientSession() as http, http.get(f"{second.url}/v1/responses/{killed_id}") as r:
            assert r.status == 404 or (await r.json())["status"] != "completed"
    finally:
        first.close()
        second.close()
        engine.stop()


async def test_an_engine_restarted_under_load_fails_in_flight_calls_cleanly(
    redis_aof_server: RedisServer, engine: FakeEngineProcess, sidecar: SidecarProcess
) -> None:
    ledger, stop = Ledger(), asyncio.Event()
    load = asyncio.gather(*(chain_until([sidecar.url], stop, ledger, c) for c in range(CLIENTS)))
    await asyncio.sleep(1.5)
    engine.kill()
    await asyncio.sleep(0.7)
    before_restart = len(ledger.acknowledged)
    engine.start()
    await asyncio.sleep(2.0)
    stop.set()
    await load
    assert len(ledger.acknowledged) > before_restart  # the next calls succeed
    refused = {s for s in ledger.statuses if s not in (200,)}
    assert refused <= {502, 504}, ledger.statuses  # in-flight and refused calls: 502, never a 500
    assert ledger.statuses.get(502, 0) + ledger.stream_failures > 0
    await assert_all_acknowledged_resolve(sidecar.url, ledger)
