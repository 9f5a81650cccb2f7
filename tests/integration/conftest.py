"""The sidecar app in-process (aiohttp test server) on memory or on a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.app import create_app
from sidecar.appkeys import STORE
from sidecar.config import Config
from sidecar.store.redis import RedisStore
from tests.fixtures.fake_engine import create_fake_engine

SidecarFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_sidecar() -> AsyncIterator[SidecarFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**settings: Any) -> TestClient[Any, Any]:
        settings.setdefault("upstream", "http://127.0.0.1:9")  # nothing listens: stateless calls fail
        settings.setdefault("upstream_api", "responses")
        client = TestClient(TestServer(create_app(Config.from_env({}, **settings))))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def engine() -> AsyncIterator[TestServer]:
    """Our fake engine (tests/fixtures/fake_engine.py) in-process, in its default `ok` mode."""
    server = TestServer(create_fake_engine())
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture(params=["memory", "redis"])
async def sidecar(request: pytest.FixtureRequest, make_sidecar: SidecarFactory) -> TestClient[Any, Any]:
    """The sidecar with no engine behind it, on each store backend."""
    if request.param == "memory":
        return await make_sidecar(redis_url="memory://")
    server = request.getfixturevalue("redis_server")
    return await make_sidecar(redis_url=server.url)


# Claims (idempotency keys, reservations in new conversations) made to last this long, so a test outlives
# several of them; whoever holds one renews it three times a claim.
CLAIM_MS = 300


@pytest.fixture(params=["memory", "redis"])
async def short_claims(
    request: pytest.FixtureRequest,
    make_sidecar: SidecarFactory,
    engine: TestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> TestClient[Any, Any]:
    """The sidecar in front of `engine` with CLAIM_MS claims, foreground turns and background runs renewing
    them, on memory and on a real redis-server."""
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    monkeypatch.setattr("sidecar.store.memory.CLAIM_SECONDS", CLAIM_MS / 1000)
    monkeypatch.setattr("sidecar.turns.CLAIM_RENEW_SECONDS", CLAIM_MS / 3000)
    monkeypatch.setattr("sidecar.runs.runner.TURN_RENEW_SECONDS", CLAIM_MS / 3000)
    sidecar = await make_sidecar(redis_url=url, upstream=str(engine.make_url("")))
    if request.param == "redis":
        redis_store = store_backend(sidecar.app[STORE])
        assert isinstance(redis_store, RedisStore)
        redis_store._claim_ttl = CLAIM_MS
    return sidecar


def store_backend(store: Any) -> Any:
    """The backend under the metrics, quota and lazy-connect wrappers."""
    while True:
        inner = getattr(store, "inner", None) or getattr(store, "_inner", None)
        if inner is None:
            return store
        store = inner
