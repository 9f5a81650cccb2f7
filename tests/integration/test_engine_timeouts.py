"""An engine that is unreachable or goes silent, on every relay and both stores: 502 / 504 before a byte
went out and nothing stored; `response.failed` (or an error chunk) after, stored failed with what was sent.
`CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS` is the longest silence the sidecar waits for."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from tests.fixtures.fake_engine import create_fake_engine
from tests.integration.conftest import SidecarFactory
from tests.integration.test_misbehaving_engine import (
    BACKENDS,
    RELAYS,
    Setup,
    assert_nothing_stored,
    assert_openai_error,
    assert_stored_as_told,
    call,
    streamed_status,
)

TIMEOUT_SECONDS = 0.3
SILENCE_SECONDS = 2.0  # far above the timeout: a sidecar that waited it out would show in the elapsed time


@pytest.fixture(params=[(r, b) for r in RELAYS for b in BACKENDS], ids=lambda p: f"{p[0]}-{p[1]}")
async def setup(request: pytest.FixtureRequest, make_sidecar: SidecarFactory) -> AsyncIterator[Setup]:
    relay, backend = request.param
    redis_url = request.getfixturevalue("redis_server").url if backend == "redis" else "memory://"
    # slow: a whole answer comes after deltas * delay; a stream's first delta at once, the next after delay
    engine = TestServer(create_fake_engine(mode="slow", deltas=2, delay=SILENCE_SECONDS / 2))
    await engine.start_server()
    sidecar = await make_sidecar(
        upstream=str(engine.make_url("")).rstrip("/"),
        upstream_api="chat" if relay == "chat" else "responses",
        redis_url=redis_url,
        upstream_timeout_seconds=TIMEOUT_SECONDS,
    )
    try:
        yield Setup(relay, engine, sidecar)
    finally:
        await engine.close()


async def test_an_engine_silent_before_its_answer_is_a_504_and_stores_nothing(setup: Setup) -> None:
    started = time.monotonic()
    outcome = await call(setup, stream=False)
    assert time.monotonic() - started < SILENCE_SECONDS
    assert_openai_error(outcome, 504)
    assert outcome.json["error"]["code"] == "upstream_timeout"
    await assert_nothing_stored(setup, outcome)


async def test_an_engine_silent_mid_stream_ends_the_stream_failed_and_stores_it_failed(setup: Setup) -> None:
    started = time.monotonic()
    outcome = await call(setup, stream=True)
    assert time.monotonic() - started < SILENCE_SECONDS
    assert outcome.status == 200
    told, text = await streamed_status(setup, outcome)
    assert told == "failed"
    # the first of the echo's two deltas, sent before the engine went silent
    assert text and "echo: hello there".startswith(text) and text != "echo: hello there"
    await assert_stored_as_told(setup, outcome, "failed")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_an_unreachable_engine_is_a_502_and_stores_nothing(
    make_sidecar: SidecarFactory, stream: bool
) -> None:
    sidecar = await make_sidecar(upstream="http://127.0.0.1:9", redis_url="memory://")
    setup = Setup("responses", TestServer(create_fake_engine()), sidecar)  # the engine is never started
    outcome = await call(setup, stream=stream)
    assert_openai_error(outcome, 502)
    # what happened, in words; not the exception's class, nor the engine's address
    assert outcome.json["error"]["message"] == "The engine is unreachable: connection refused."
    await assert_nothing_stored(setup, outcome)
