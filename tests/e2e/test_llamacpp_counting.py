"""End to end on llama.cpp (Gemma 3 270M) through the openai SDK, in both upstream modes: `input_tokens.count`
agrees with the engine's own `usage.input_tokens` for the same create body, and a compacted window sent
back is answered, with the summary of the folded turns in what the engine read."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import openresponses_types as spec
import pytest

from tests.conformance import _validate
from tests.e2e.conftest import sdk_client
from tests.e2e.sdk_objects import MODEL, SAMPLING, ask, checked
from tests.e2e.wire_tap import TappedOpenAI
from tests.fixtures.llamacpp import LlamaCppEngine
from tests.fixtures.redis_servers import RedisServer
from tests.fixtures.sidecar_process import SidecarProcess

pytestmark = pytest.mark.slow

POLICY = "compaction:\n  key: e2e-compaction-key-0123456789abcdef0123\n"
# Questions long enough that a chat template's few tokens per message are well inside 10 %.
QUESTIONS = [
    "I keep three cats at home, called Miso, Tofu and Pepper, and they sleep all day on the sofa. "
    "What could I feed them?",
    "My neighbour has a large brown dog that barks every evening when the postman walks along "
    "our street. Why might it bark?",
    "We are planning a short holiday by the sea next summer with the children and their "
    "grandparents. Where should we go?",
]


@pytest.fixture(scope="module", params=["responses", "chat"])
def counting_sidecar(
    request: pytest.FixtureRequest,
    llamacpp_engine: LlamaCppEngine,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SidecarProcess]:
    """`convostore serve` with a compaction key, per upstream mode, on the session's Redis and engine."""
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(POLICY)
    process = SidecarProcess(
        upstream=llamacpp_engine.url,
        upstream_api=request.param,
        redis_url=redis_server.url,
        extra_args=("--config", str(policy)),
    )
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def client(counting_sidecar: SidecarProcess) -> Iterator[TappedOpenAI]:
    with sdk_client(counting_sidecar) as sdk:
        yield sdk


def engine_tokens(engine: LlamaCppEngine, text: str) -> int:
    """llama.cpp's own count of a text (its /tokenize, no special tokens)."""
    body = json.dumps({"content": text, "add_special": False}).encode()
    request = urllib.request.Request(
        f"{engine.url}/tokenize", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return len(json.loads(resp.read())["tokens"])


def assert_within_10_percent(counted: int, engine: int) -> None:
    assert abs(counted - engine) <= 0.1 * engine, f"counted {counted}, the engine read {engine}"


def used_input_tokens(client: TappedOpenAI, **body: Any) -> int:
    response = checked(client, client.responses.create(model=MODEL, **{**SAMPLING, **body}))
    assert response.usage is not None
    return response.usage.input_tokens


def test_the_count_is_within_10_percent_of_the_engines_usage(client: TappedOpenAI) -> None:
    # A new conversation.
    first = {"input": QUESTIONS[0], "store": False}
    counted = client.responses.input_tokens.count(model=MODEL, input=QUESTIONS[0])
    assert counted.object == "response.input_tokens"
    assert_within_10_percent(counted.input_tokens, used_input_tokens(client, **first))
    # A chain of three turns: the count for the third is what the engine reads for it.
    previous = ask(client, QUESTIONS[0]).id
    previous = ask(client, QUESTIONS[1], previous_response_id=previous).id
    raw = client.responses.input_tokens.with_raw_response.count(
        model=MODEL, input=QUESTIONS[2], previous_response_id=previous
    )
    assert raw.headers["X-Token-Count-Source"] == "engine"  # no tokenizer.json: llama.cpp's /tokenize
    third = used_input_tokens(client, input=QUESTIONS[2], previous_response_id=previous)
    assert_within_10_percent(raw.parse().input_tokens, third)


def test_a_compacted_window_is_answered_with_the_summary_in_what_the_engine_read(
    client: TappedOpenAI, llamacpp_engine: LlamaCppEngine
) -> None:
    previous = None
    for question in QUESTIONS:
        previous = ask(client, question, **({"previous_response_id": previous} if previous else {})).id
    assert previous is not None
    compacted = client.responses.compact(model=MODEL, previous_response_id=previous)
    body = client.tap.last_json()
    _validate(spec.CompactResource, body)
    window = body["output"]
    # The first of three turns folded (two kept by default), in one compaction item at the front.
    assert [item["type"] for item in window] == ["compaction", "message", "message", "message", "message"]
    assert compacted.usage.input_tokens > 0

    follow_up = {"role": "user", "content": "Thank you. Which of these questions did I ask first?"}
    answered = used_input_tokens(client, input=[*window, follow_up], store=False)
    without_summary = used_input_tokens(client, input=[*window[1:], follow_up], store=False)
    # The summary quotes the first question whole, so the engine read at least its tokens more; a token
    # passed through or dropped would not add them.
    summary_floor = engine_tokens(llamacpp_engine, QUESTIONS[0])
    assert answered - without_summary >= summary_floor, (answered, without_summary, summary_floor)
    assert answered - without_summary <= summary_floor + 80  # the header, the answer's excerpt, markup
    counted = client.responses.input_tokens.count(model=MODEL, input=[*window, follow_up])
    assert_within_10_percent(counted.input_tokens, answered)
