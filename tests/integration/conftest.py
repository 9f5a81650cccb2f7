"""The sidecar app in-process (aiohttp test server) on memory or on a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.app import create_app
from sidecar.config import Config
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
