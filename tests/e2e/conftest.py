"""End-to-end wiring: one sidecar process per upstream mode in front of the session's llama.cpp engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.wire_tap import TappedOpenAI
from tests.fixtures.llamacpp import LlamaCppEngine
from tests.fixtures.redis_servers import RedisServer
from tests.fixtures.sidecar_process import SidecarProcess


@pytest.fixture(scope="session", params=["responses", "chat"])
def sidecar(
    request: pytest.FixtureRequest, llamacpp_engine: LlamaCppEngine, redis_server: RedisServer
) -> Iterator[SidecarProcess]:
    """`convostore serve` on the session's Redis, speaking to the engine's /v1/responses or, translating,
    its /v1/chat/completions. Session-scoped and parametrised, so pytest runs each mode's tests in one
    block on one process and stops it before starting the other."""
    process = SidecarProcess(
        upstream=llamacpp_engine.url, upstream_api=request.param, redis_url=redis_server.url
    )
    try:
        yield process
    finally:
        process.close()


def sdk_client(sidecar: SidecarProcess) -> TappedOpenAI:
    return TappedOpenAI(base_url=f"{sidecar.url}/v1")


@pytest.fixture
def client(sidecar: SidecarProcess) -> Iterator[TappedOpenAI]:
    with sdk_client(sidecar) as sdk:
        yield sdk


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    # A failing end-to-end test shows what the sidecar and the engine logged, not just the SDK's exception.
    report = yield
    if report.failed and isinstance(item, pytest.Function):
        sidecar = item.funcargs.get("sidecar")
        engine = item.funcargs.get("llamacpp_engine")
        if isinstance(sidecar, SidecarProcess):
            report.sections.append(("sidecar log tail", sidecar.log_tail()))
        if isinstance(engine, LlamaCppEngine):
            report.sections.append(("llama.cpp log tail", engine.log_tail()))
    return report
