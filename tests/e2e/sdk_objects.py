"""What the end-to-end tests check on what the SDK got: the raw wire shape (tests/conformance.py) and the few
facts a tiny model's answer can be held to (status, usage), never its wording."""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response

from tests.conformance import assert_response_resource
from tests.e2e.wire_tap import TappedOpenAI

# llama.cpp serves whatever model it loaded under any name.
MODEL = "gemma-3-270m"
# Greedy decoding: the same prompt gives the same tokens, so a rerun sees the same lengths.
SAMPLING: dict[str, Any] = {"temperature": 0.0, "max_output_tokens": 8}


def checked(client: TappedOpenAI, response: Response) -> Response:
    """`response` came over the wire as a complete ResponseResource and ended the way a token-limited run can.

    The model rarely stops by itself inside a few tokens: llama.cpp then says `completed`, and the sidecar
    (like OpenAI) says `incomplete` with reason `max_output_tokens`."""
    assert_response_resource(client.tap.response_resource(response.id))
    assert response.id.startswith("resp_"), response.id
    assert response.status in ("completed", "incomplete"), (response.status, response.error)
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    assert response.error is None
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert [item.type for item in response.output] == ["message"], response.output
    assert response.output[0].id.startswith("msg_"), response.output[0].id
    return response


def cached_tokens(response: Response) -> int:
    assert response.usage is not None
    return response.usage.input_tokens_details.cached_tokens


def ask(client: TappedOpenAI, text: str, **params: Any) -> Response:
    """One non-streamed turn (stored unless `store=False`) with small greedy settings, checked."""
    return checked(client, client.responses.create(model=MODEL, input=text, **{**SAMPLING, **params}))


def input_item_ids(client: TappedOpenAI, response_id: str) -> list[str]:
    """Ids of a response's whole input (resolved history plus new input), oldest first."""
    page = client.responses.input_items.list(response_id, order="asc", limit=100)
    assert not page.has_more
    return [item.id for item in page.data]


def input_texts(client: TappedOpenAI, response_id: str) -> list[str]:
    """The text of every message in a response's input, oldest first (one string per item)."""
    page = client.responses.input_items.list(response_id, order="asc", limit=100)
    texts = []
    for item in page.data:
        assert item.type == "message", item
        texts.append("".join(getattr(part, "text", "") for part in item.content))
    return texts
