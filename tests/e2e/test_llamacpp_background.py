"""End to end on llama.cpp (Gemma 3 270M), background responses across two sidecar processes sharing one
redis-server, through the openai SDK: poll to completion and chain, cancel a long generation and see the
engine stop, drop a background stream and resume it on the other replica. Every stored object and the
whole event log validate against the Open Responses models."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from tests.conformance import assert_event_sequence, assert_response_resource
from tests.e2e.sdk_objects import MODEL
from tests.fixtures.llamacpp import LlamaCppEngine
from tests.fixtures.redis_servers import RedisServer
from tests.fixtures.sidecar_process import SidecarProcess

pytestmark = pytest.mark.slow

Replicas = tuple[SidecarProcess, SidecarProcess]
GREEDY: dict[str, Any] = {"temperature": 0.0}


@pytest.fixture(scope="module", params=["responses", "chat"])
def replicas(
    request: pytest.FixtureRequest, llamacpp_engine: LlamaCppEngine, redis_server: RedisServer
) -> Iterator[Replicas]:
    """Two `convostore serve` processes (one worker each) on the session's Redis and engine."""
    first = second = None
    try:
        first = SidecarProcess(
            upstream=llamacpp_engine.url, upstream_api=request.param, redis_url=redis_server.url
        )
        second = SidecarProcess(
            upstream=llamacpp_engine.url, upstream_api=request.param, redis_url=redis_server.url
        )
        yield first, second
    finally:
        for process in (first, second):
            if process is not None:
                process.close()


@pytest.fixture
def clients(replicas: Replicas) -> Iterator[tuple[openai.OpenAI, openai.OpenAI]]:
    first, second = (
        openai.OpenAI(base_url=f"{p.url}/v1", api_key="sk-test", max_retries=0, timeout=120) for p in replicas
    )
    with first, second:
        yield first, second


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return orjson.loads(resp.read())


def stored(process: SidecarProcess, response_id: str) -> dict[str, Any]:
    """The response object as the sidecar serves it, validated against the Open Responses models."""
    body: dict[str, Any] = get_json(f"{process.url}/v1/responses/{response_id}")
    assert_response_resource(body)
    return body


def logged_events(process: SidecarProcess, response_id: str) -> list[dict[str, Any]]:
    """The run's whole event log, replayed by GET ?stream=true."""
    with urllib.request.urlopen(f"{process.url}/v1/responses/{response_id}?stream=true", timeout=60) as resp:
        body = resp.read()
    return [orjson.loads(line[6:]) for line in body.splitlines() if line.startswith(b"data: ")]


def poll(client: openai.OpenAI, response_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        assert time.monotonic() < deadline, f"still {response.status}"
        time.sleep(0.2)


def engine_busy(engine: LlamaCppEngine) -> bool:
    """Whether any llama.cpp slot is generating (its /slots endpoint)."""
    return any(slot.get("is_processing") for slot in get_json(f"{engine.url}/slots"))


def test_background_polls_to_completion_on_the_other_replica_and_chains(
    replicas: Replicas, clients: tuple[openai.OpenAI, openai.OpenAI]
) -> None:
    first, second = clients
    created = first.responses.create(
        model=MODEL, input="Say hello.", background=True, max_output_tokens=16, **GREEDY
    )
    assert created.status in ("queued", "in_progress") and created.background is True
    stored(replicas[1], created.id)  # its progress validates too
    done = poll(second, created.id)
    assert done.status in ("completed", "incomplete"), done.error
    assert done.background is True and done.output_text
    assert done.usage is not None and done.usage.output_tokens > 0
    body = stored(replicas[0], created.id)
    assert body["status"] == done.status and body["output"][0]["id"] == done.output[0].id
    chained = second.responses.create(
        model=MODEL, input="Thanks.", previous_response_id=created.id, max_output_tokens=8, **GREEDY
    )
    assert chained.status in ("completed", "incomplete")
    stored(replicas[1], chained.id)
    history = [item.id for item in second.responses.input_items.list(chained.id, order="asc").data]
    assert done.output[0].id in history  # the background turn is the next turn's history
    assert chained.usage is not None and chained.usage.input_tokens > done.usage.input_tokens


def test_cancel_on_the_other_replica_stops_the_engine(
    replicas: Replicas, clients: tuple[openai.OpenAI, openai.OpenAI], llamacpp_engine: LlamaCppEngine
) -> None:
    first, second = clients
    created = first.responses.create(
        model=MODEL,
        input="Count from 1 to 1000, one number per line.",
        background=True,
        max_output_tokens=3000,
        **GREEDY,
    )
    deadline = time.monotonic() + 60
    while len(stored(replicas[1], created.id)["output"] or []) == 0 or not engine_busy(llamacpp_engine):
        assert time.monotonic() < deadline, "the run never started generating"
        time.sleep(0.2)
    time.sleep(1.0)  # some text
    cancelled = second.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    partial = cancelled.output_text
    assert partial, "a cancel keeps the output produced so far"
    # The engine request is cut: llama.cpp's slot stops within a moment, long before 3000 tokens.
    deadline = time.monotonic() + 10
    while engine_busy(llamacpp_engine):
        assert time.monotonic() < deadline, "the engine kept generating after the cancel"
        time.sleep(0.2)
    time.sleep(1.0)
    for process in replicas:  # stored cancelled, and nothing grows after the cancel
        body = stored(process, created.id)
        assert body["status"] == "cancelled"
        assert "".join(p["text"] for p in body["output"][0]["content"]) == partial
    assert first.responses.cancel(created.id).output_text == partial  # again: unchanged
    events = logged_events(replicas[0], created.id)
    # The log ends as the run did (the spec has no cancelled event: response.failed carrying the status).
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["status"] == "cancelled"
    assert_event_sequence(events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_dropped_stream_resumes_whole_on_the_other_replica(
    replicas: Replicas, clients: tuple[openai.OpenAI, openai.OpenAI]
) -> None:
    first, second = clients
    stream = first.responses.create(
        model=MODEL,
        input="Write two sentences about the sea.",
        background=True,
        stream=True,
        max_output_tokens=48,
        **GREEDY,
    )
    seen = []
    for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta" and len(seen) >= 6:
            break  # the client drops the stream mid-text: the run goes on
    stream.close()
    response_id = seen[0].response.id
    resumed = second.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)
    rest = list(resumed)
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(len(numbers))), numbers  # consecutive: nothing lost, nothing doubled
    assert rest[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
    done = poll(second, response_id)
    assert text and text == done.output_text
    assert rest[-1].response.output_text == text
    events = logged_events(replicas[1], response_id)
    assert_event_sequence(events)
    assert [e["sequence_number"] for e in events] == numbers
    stored(replicas[0], response_id)
    chained = first.responses.create(
        model=MODEL, input="Shorter.", previous_response_id=response_id, max_output_tokens=8, **GREEDY
    )
    assert chained.status in ("completed", "incomplete")
    stored(replicas[0], chained.id)
