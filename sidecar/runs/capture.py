"""A run's response object rebuilt from its logged events: its progress, or how a reaper settles it."""

from __future__ import annotations

from typing import Any

import orjson

from ..wire import events as ev
from ..wire.stream_state import ResponseStreamState

JSONObject = dict[str, Any]
_LIFECYCLE = frozenset({"response.created", "response.queued", "response.in_progress"})
TERMINAL_EVENTS = frozenset(ev.TERMINAL_BY_STATUS.values()) | {"error"}


def replayed_state(base: JSONObject, events: list[bytes]) -> ResponseStreamState:
    """The stream state the runner had after these events (its own output, text joined)."""
    state = ResponseStreamState(base)
    state.start()
    for raw in events:
        event = orjson.loads(raw)
        if event.get("type") not in _LIFECYCLE:
            state.emit(event)
    return state


def progress(base: JSONObject, status: str, events: list[bytes]) -> JSONObject:
    """The response object of a run still going: `status`, the output so far (items not yet done are
    in_progress). A finished run's terminal event carries its final object: that one."""
    if events:
        last = orjson.loads(events[-1])
        if last.get("type") in TERMINAL_EVENTS and isinstance(last.get("response"), dict):
            final: JSONObject = last["response"]
            return final
    state = replayed_state(base, events)
    output = [state.item(index, status="in_progress") for index in range(state.next_output_index)]
    return {**base, "status": status, "output": output}


def settled(
    base: JSONObject, events: list[bytes], status: str, last_seq: int, error: JSONObject | None
) -> tuple[JSONObject, JSONObject]:
    """The final object of a run ended from outside (its runner died, or was cancelled), with the
    output it had captured, and its terminal event numbered right after the last one logged."""
    state = replayed_state(base, events)
    if status == "failed":
        terminal = state.terminate("failed", error=error)[-1]
    else:
        final = {**state.incomplete("max_output_tokens"), "status": status, "incomplete_details": None}
        terminal = ev.lifecycle(ev.TERMINAL_BY_STATUS.get(status, "response.failed"), final)
    terminal["sequence_number"] = last_seq + 1
    response: JSONObject = terminal["response"]
    return response, terminal
