"""The one protocol of an engine-stream translator (Responses rewriter, chat translator), and its SSE feed."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from .sse import DONE, SSEMessage


class StreamTranslator(Protocol):
    """Turns an engine's events into the client's Responses events, keeping the response they build.
    Used by the live relay (handlers/sse_relay.py) and the background runner (runs/runner.py)."""

    @property
    def status(self) -> str | None: ...

    @property
    def final_response(self) -> dict[str, Any] | None: ...

    def translate(self, event: Any) -> list[dict[str, Any]]: ...

    def end(self, *, done: bool) -> list[dict[str, Any]]: ...

    def fail(self, message: str, code: str) -> list[dict[str, Any]]: ...

    def incomplete(self, reason: str) -> dict[str, Any]: ...


def translate_messages(messages: list[SSEMessage], translator: StreamTranslator) -> list[dict[str, Any]]:
    """Decoded SSE messages through the translator: `[DONE]` ends it, a message that is not JSON fails it."""
    events: list[dict[str, Any]] = []
    for message in messages:
        if message.data == DONE:
            events += translator.end(done=True)
        elif message.data.strip():
            try:
                event = orjson.loads(message.data)
            except orjson.JSONDecodeError:
                events += translator.fail("The engine sent an event that is not JSON.", "server_error")
            else:
                events += translator.translate(event)
    return events
