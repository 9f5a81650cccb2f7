"""Shared pytest wiring: process fixtures (Redis, llama.cpp) and the `slow` marker switch."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping

import pytest
import uvloop

from tests.fixtures.llamacpp import LlamaCppEngine
from tests.fixtures.redis_servers import RedisCluster, RedisServer

# Every fixture below stops its processes in `finally`; tests/fixtures/redis_servers.py also SIGKILLs anything
# still registered at interpreter exit (KeyboardInterrupt, crash in teardown) and arms PR_SET_PDEATHSIG.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--skip-slow",
        action="store_true",
        default=False,
        help="skip tests marked slow (real-engine end-to-end); same as CONVOSTORE_SKIP_SLOW=1",
    )
    parser.addoption(
        "--loop",
        choices=("uvloop", "asyncio"),
        default=os.environ.get("CONVOSTORE_TEST_LOOP", "uvloop"),
        help="the event loop async tests run on: uvloop, the sidecar's own (default), or asyncio's",
    )


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """In-process tests run on the loop `convostore serve` runs on: transports, timers and close
    ordering differ between uvloop and asyncio's loop in ways a relay or a client can depend on."""
    if config.getoption("--loop") == "uvloop":
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not (config.getoption("--skip-slow") or os.environ.get("CONVOSTORE_SKIP_SLOW") == "1"):
        return
    skip_slow = pytest.mark.skip(reason="slow test skipped (--skip-slow or CONVOSTORE_SKIP_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone redis-server shared by the session; tests use their own keys or call `flushall()`."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three cluster masters (no replicas), all slots assigned; `.url` is the first node."""
    cluster = RedisCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_aof_server() -> Iterator[RedisServer]:
    """A fresh redis-server with appendonly + fsync always, for kill()/restart() durability tests."""
    server = RedisServer(appendonly=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def llamacpp_engine() -> Iterator[LlamaCppEngine]:
    """llama.cpp + Gemma 3 270M, loaded once per session, only if a test asks (it burns CPU when idle)."""
    engine = LlamaCppEngine()
    try:
        yield engine
    finally:
        engine.stop()
