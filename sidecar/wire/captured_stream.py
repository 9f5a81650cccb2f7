"""The relay's side of every stream translator (Responses repair, chat translation): the turn captured
so far, and the ways a stream ends early or goes wrong, whatever the engine sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .stream_state import JSONObject, MalformedEvent, ResponseStreamState


class CapturedStream:
    """What a relay reads from any stream translator (Responses repair or chat translation): the turn
    captured so far, and the two ways a stream can end early. Subclasses set `_state`."""

    _state: ResponseStreamState

    @property
    def output_items(self) -> list[JSONObject]:
        return self._state.output_items

    @property
    def status(self) -> str | None:
        return self._state.status

    @property
    def usage(self) -> JSONObject:
        return self._state.usage

    @property
    def final_response(self) -> JSONObject | None:
        return self._state.final_response

    def feed(self, event: JSONObject) -> list[JSONObject]:
        """One decoded engine event in, the events to send the client now out."""
        raise NotImplementedError

    def translate(self, event: Any) -> list[JSONObject]:
        """`feed` that never raises. An event the translator cannot follow (valid JSON of the wrong shape,
        whatever it trips) ends the stream: the events already stamped for it, then `response.failed`."""
        if not isinstance(event, dict):
            return self._guarded(_not_an_object)
        return self._guarded(lambda: self.feed(event))

    def end(self, *, done: bool) -> list[JSONObject]:
        """The engine's stream ended (`done`: with chat's `[DONE]`); never raises. An unfinished stream
        ends failed unless the translator knows the answer was whole."""
        if self._state.terminated:
            return []
        return self._guarded(lambda: self._end(done))

    def _end(self, done: bool) -> list[JSONObject]:
        return self.fail("The engine's stream ended before the response finished.", "server_error")

    def _guarded(self, step: Callable[[], list[JSONObject]]) -> list[JSONObject]:
        self._state.begin_batch()
        try:
            return step()
        except Exception as exc:
            reason = str(exc) if isinstance(exc, MalformedEvent) else exc.__class__.__name__
            message = f"The engine sent an event the sidecar cannot follow: {reason}."
            return self._state.batch() + self.fail(message, "server_error")

    def fail(self, message: str, code: str) -> list[JSONObject]:
        """The engine died or reported an error: `response.failed` with the partial output."""
        return self._state.fail(message, code)

    def incomplete(self, reason: str) -> JSONObject:
        """The response to store when the client went away mid-stream."""
        return self._state.incomplete(reason)


def _not_an_object() -> list[JSONObject]:
    raise MalformedEvent("an event that is not a JSON object")
