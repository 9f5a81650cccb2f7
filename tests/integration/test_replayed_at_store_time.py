"""A keyed turn whose claim lapsed (its store away for a claim's life) may find, when it stores, that its
retry stored first: the store answers with the retry's result. The client must then get that response, or be
told its own id was never stored — never chain from an id that is not there. The store's answer is injected
here (the race needs a claim to lapse mid-call); the store underneath is real."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.appkeys import STORE
from sidecar.store.base import TurnResult
from tests.integration.conftest import SidecarFactory

Client = TestClient[Any, Any]


@pytest.fixture
async def sidecar(make_sidecar: SidecarFactory, engine: TestServer) -> Client:
    return await make_sidecar(redis_url="memory://", upstream=str(engine.make_url("")))


def retry_stored_first(sidecar: Client, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The next append stores the turn as the retry's: it answers `replayed`, naming the retry's response."""
    store = sidecar.app[STORE]
    original = store.append_turn
    seen: dict[str, str] = {}

    async def append_turn(turn: Any) -> TurnResult:
        monkeypatch.setattr(store, "append_turn", original)
        result = await original(turn)  # the retry's turn, stored under another id
        seen["stored"] = str(result.response_id)
        return TurnResult(
            result.conversation_id, result.version, 0, result.session_bytes, 1, result.response_id, True
        )

    monkeypatch.setattr(store, "append_turn", append_turn)
    return seen


async def test_a_stream_says_its_id_was_not_stored_and_names_the_one_that_was(
    sidecar: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = retry_stored_first(sidecar, monkeypatch)
    body = {"model": "m", "input": "hi", "stream": True}
    answer = await sidecar.post("/v1/responses", json=body, headers={"Idempotency-Key": "lapsed-1"})
    text = (await answer.read()).decode()
    assert '"type":"response.failed"' in text
    assert f"stored first, as {seen['stored']}: this answer was not stored." in text


async def test_a_whole_chat_answer_is_the_stored_one(
    sidecar: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = retry_stored_first(sidecar, monkeypatch)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    answer = await sidecar.post(
        "/v1/chat/completions",
        json=body,
        headers={"Idempotency-Key": "lapsed-2", "X-Conversation-Id": "lapsed"},
    )
    assert answer.status == 200, await answer.text()
    assert answer.headers["X-Response-Id"] == seen["stored"]  # the one a client can chain from
    assert answer.headers.get("Idempotent-Replayed") == "true"
