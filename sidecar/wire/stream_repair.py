"""Rewrite an engine's /v1/responses answer into one the openai SDK accepts, under the sidecar's ids."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import events as ev
from .captured_stream import CapturedStream
from .resource import complete_output_item, complete_part, item_id_prefix, normalise_usage
from .stream_state import MalformedEvent, ResponseStreamState

JSONObject = dict[str, Any]
MintId = Callable[[str], str]

_TERMINAL_STATUS = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
}
# Events that belong to a content part of a message; the SDK indexes `content[content_index]` for the
# text ones, so a part must have been announced before them.
_MESSAGE_PART_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_text.annotation.added",
        "response.refusal.delta",
        "response.refusal.done",
    }
)
_REASONING_PART_EVENTS = frozenset(
    {
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.reasoning.delta",
        "response.reasoning.done",
    }
)
_SUMMARY_EVENTS = frozenset(
    {
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
    }
)
_ARGUMENT_EVENTS = frozenset(
    {"response.function_call_arguments.delta", "response.function_call_arguments.done"}
)
# The reasons the spec gives an incomplete response; chat's word for the first is "length".
_INCOMPLETE_REASONS = {"max_output_tokens": "max_output_tokens", "length": "max_output_tokens",
                       "content_filter": "content_filter"}  # fmt: skip


class ResponsesStreamRewriter(CapturedStream):
    """Feeds on the engine's events (decoded JSON), returns the events to send to the client now.

    Repairs what engines like llama.cpp leave out (sequence_number, output_index, content_index, item_id,
    created/in_progress, a complete response object) and replaces every engine id with a sidecar id.
    """

    def __init__(
        self,
        base: JSONObject,
        mint_id: MintId,
        *,
        now: Callable[[], float] = time.time,
        infer_length_limit: bool = True,
    ) -> None:
        self._state = ResponseStreamState(base, now=now)
        self._base = base
        self._infer_length_limit = infer_length_limit
        self._mint = mint_id
        # Engine item id -> sidecar id of the LATEST item that used it: an engine that reuses an id for a new
        # item gets a fresh sidecar id, later events follow the newest one.
        self._ids: dict[str, str] = {}
        self._index_of: dict[str, int] = {}
        self._by_engine_index: dict[int, int] = {}
        self._item_ids: dict[int, str] = {}
        self._parts: dict[int, int] = {}
        # (output index, the engine's content_index) -> ours: parts are numbered in the order announced.
        self._subs: dict[tuple[int, int], int] = {}
        self._current: int | None = None

    def feed(self, event: JSONObject) -> list[JSONObject]:
        kind = event.get("type")
        if kind == "response.output_text.delta" and self._state.streaming:
            # Most of a stream: repaired in one copy when it continues an announced part of an open item.
            delta = self._text_delta(event)
            if delta is not None:
                return [delta]
        if self._state.terminated:
            return []
        if kind in ("response.created", "response.queued"):
            return self._state.created()
        out = self._state.start()
        if kind == "response.in_progress":
            return out
        if kind in _TERMINAL_STATUS:
            out += self._terminal(kind, event.get("response") or {})
        elif kind == "error":
            nested = event.get("error")
            error: JSONObject = nested if isinstance(nested, dict) else event
            out += self.fail(
                str(error.get("message") or "engine error"), str(error.get("code") or "server_error")
            )
        elif kind == "response.output_item.added":
            out += self._item_added(event)
        elif kind == "response.output_item.done":
            out += self._item_done(event)
        elif kind in ("response.content_part.added", "response.content_part.done"):
            out += self._content_part(kind, event)
        elif kind in _MESSAGE_PART_EVENTS or kind in _REASONING_PART_EVENTS:
            out += self._content_event(kind, event)
        elif kind in _ARGUMENT_EVENTS:
            out += self._item_event(event, "function_call")
        elif kind in _SUMMARY_EVENTS:
            out += self._item_event(event, "reasoning", summary=True)
        # Anything else is not an Open Responses event (an engine's debug or audio events): what reaches
        # the client conforms to the spec whatever the engine sends, so it is dropped.
        return out

    # -- items -----------------------------------------------------------------------------------------------

    def _item_added(self, event: JSONObject) -> list[JSONObject]:
        item = event.get("item") or {}
        known = self._known(event, item.get("id"))
        if known is not None and self._state.is_open(known):
            return []  # announced already (a repeated event, or deltas that came first): one item
        index = self._new_item(item, event.get("output_index"))
        fresh = {**item, "id": self._item_ids[index]}
        if fresh.get("type", "message") == "function_call":
            # Call ids are the sidecar's too: an engine that repeats them would pair a later
            # function_call_output with the wrong call in the stored history.
            fresh["call_id"] = self._mint("call")
        added = complete_output_item(fresh, status="in_progress")
        self._parts[index] = len(added.get("content") or [])
        for sub in range(self._parts[index]):
            self._subs[(index, sub)] = sub
        return [self._state.emit(ev.output_item_added(index, added))]

    def _new_item(self, item: JSONObject, engine_index: Any) -> int:
        """Reserve the next output index under a fresh sidecar id; the caller emits the added event."""
        sidecar_id = self._mint(item_id_prefix(item.get("type") or "message"))
        engine_id = item.get("id")
        if isinstance(engine_id, str):
            self._ids[engine_id] = sidecar_id
        index = self._state.next_output_index
        self._index_of[sidecar_id] = index
        self._item_ids[index] = sidecar_id
        if isinstance(engine_index, int):
            self._by_engine_index[engine_index] = index
        self._current = index
        return index

    def _item_done(self, event: JSONObject) -> list[JSONObject]:
        item = event.get("item") or {}
        out: list[JSONObject] = []
        known = self._known(event, item.get("id"))
        if known is not None and not self._state.is_open(known):
            return []  # done already: a repeated event must not add the item twice
        index = self._resolve(event, item.get("id"))
        if index is None or not self._state.is_open(index):
            out += self._synthesize_added(item.get("type") or "message", item.get("id"), event)
            index = self._current
        assert index is not None
        streamed = self._state.item(index, status="completed")
        done = complete_output_item({**item, "id": self._item_ids[index]})
        if done["type"] == "function_call":
            # The call id announced in the added event is the one the SDK matches the done item by.
            done["call_id"] = streamed["call_id"]
        # A terse done item (no text, no arguments) must not erase what the deltas already said.
        for field in ("content", "arguments", "summary"):
            if field in streamed and not item.get(field):
                done[field] = streamed[field]
        out.append(self._state.emit(ev.output_item_done(index, done)))
        return out

    def _content_part(self, kind: str, event: JSONObject) -> list[JSONObject]:
        out, index, item_id = self._target(event, "message")
        part = complete_part(event.get("part") or ev.output_text_part())
        if kind == "response.content_part.added":
            engine_sub = event.get("content_index")
            sub = self._subs.get((index, engine_sub)) if isinstance(engine_sub, int) else None
            if sub is None:
                sub = self._parts.get(index, 0)
                self._parts[index] = sub + 1
                if isinstance(engine_sub, int):
                    self._subs[(index, engine_sub)] = sub
            out.append(self._state.emit(ev.content_part_added(item_id, index, sub, part)))
        else:
            sub = self._content_index(event, index)
            out.append(self._state.emit(ev.content_part_done(item_id, index, sub, part)))
        return out

    def _content_event(self, kind: str, event: JSONObject) -> list[JSONObject]:
        item_type = "reasoning" if kind in _REASONING_PART_EVENTS else "message"
        out, index, item_id = self._target(event, item_type)
        if item_type == "message" and self._parts.get(index, 0) == 0:
            part = {"type": "refusal", "refusal": ""} if "refusal" in kind else ev.output_text_part()
            self._parts[index] = 1
            engine_sub = event.get("content_index")
            if isinstance(engine_sub, int):
                self._subs[(index, engine_sub)] = 0
            out.append(self._state.emit(ev.content_part_added(item_id, index, 0, part)))
        repaired = {**_strip(event), "item_id": item_id, "output_index": index}
        repaired["content_index"] = self._content_index(event, index)
        if kind in ("response.output_text.delta", "response.output_text.done"):
            # OpenAI always sends logprobs on text events; typed SDK models declare it required.
            repaired.setdefault("logprobs", [])
        out.append(self._state.emit(repaired))
        return out

    def _text_delta(self, event: JSONObject) -> JSONObject | None:
        """`_content_event` for a text delta that needs no item or part announced first, else None."""
        index = self._resolve(event, event.get("item_id"))
        delta = event.get("delta")
        if (
            index is None
            or not isinstance(delta, str)
            or not self._parts.get(index)
            or not self._state.is_open(index)
        ):
            return None
        sub = self._content_index(event, index)
        repaired = event.copy()
        repaired.pop("sequence_number", None)
        repaired["item_id"] = self._item_ids[index]
        repaired["output_index"] = index
        repaired["content_index"] = sub
        if "logprobs" not in repaired:
            repaired["logprobs"] = []
        return self._state.emit_delta(repaired, index, sub, delta, "output_text")

    def _item_event(self, event: JSONObject, item_type: str, *, summary: bool = False) -> list[JSONObject]:
        out, index, item_id = self._target(event, item_type)
        repaired = {**_strip(event), "item_id": item_id, "output_index": index}
        if summary and not isinstance(repaired.get("summary_index"), int):
            repaired["summary_index"] = 0
        out.append(self._state.emit(repaired))
        return out

    def _target(self, event: JSONObject, item_type: str) -> tuple[list[JSONObject], int, str]:
        """The open item an event is about, announcing one first if the engine never did."""
        out: list[JSONObject] = []
        index = self._resolve(event, event.get("item_id"))
        if index is None or not self._state.is_open(index):
            out += self._synthesize_added(item_type, event.get("item_id"), event)
            index = self._current
        assert index is not None
        return out, index, self._item_ids[index]

    def _known(self, event: JSONObject, engine_id: Any) -> int | None:
        """The item the engine named (by id, else by its output_index), if it announced one; not a guess."""
        if isinstance(engine_id, str):
            return self._index_of[self._ids[engine_id]] if engine_id in self._ids else None
        engine_index = event.get("output_index")
        return self._by_engine_index.get(engine_index) if isinstance(engine_index, int) else None

    def _resolve(self, event: JSONObject, engine_id: Any) -> int | None:
        """`_known`, else (the engine named no item it announced) the current item, unless it named an id."""
        known = self._known(event, engine_id)
        if known is not None or isinstance(engine_id, str):
            return known
        return self._current

    def _synthesize_added(self, item_type: str, engine_id: Any, event: JSONObject) -> list[JSONObject]:
        skeleton: JSONObject = {"type": item_type, "status": "in_progress"}
        if isinstance(engine_id, str):
            skeleton["id"] = engine_id
        if item_type == "message":
            skeleton.update(role="assistant", content=[])
        elif item_type == "function_call":
            skeleton.update(name=(event.get("item") or {}).get("name", ""), arguments="")
        elif item_type == "reasoning":
            skeleton.update(summary=[])
        return self._item_added({"item": skeleton, "output_index": event.get("output_index")})

    def _content_index(self, event: JSONObject, index: int) -> int:
        """Our number of the part an event is about: the one the engine's content_index was announced
        as, else (unannounced or none given) the latest part of the item."""
        engine_sub = event.get("content_index")
        if isinstance(engine_sub, int):
            sub = self._subs.get((index, engine_sub))
            if sub is not None:
                return sub
        return max(self._parts.get(index, 1) - 1, 0)

    # -- the end ---------------------------------------------------------------------------------------------

    def _terminal(self, kind: str, response: JSONObject) -> list[JSONObject]:
        out: list[JSONObject] = []
        status = _TERMINAL_STATUS[kind]
        self._state.set_usage(response.get("usage"))
        engine_output = response.get("output")
        if self._state.next_output_index == 0 and isinstance(engine_output, list):
            # An engine that streamed no item events: announce its final items so the stream is whole.
            for item in engine_output:
                out += self._item_added({"item": {**item, "status": "in_progress"}})
                out += self._item_done({"item": item})
        item_status = "completed" if status == "completed" else "incomplete"
        for index in self._state.open_indices():
            out.append(
                self._state.emit(ev.output_item_done(index, self._state.item(index, status=item_status)))
            )
        limit = self._base.get("max_output_tokens") if self._infer_length_limit else None
        status, details = _length_limited(status, response, limit, self._state.usage)
        error = _error_of(response.get("error")) if status == "failed" else None
        completed_at = response.get("completed_at")
        out += self._state.terminate(
            status,
            incomplete_details=details,
            error=error,
            completed_at=completed_at if isinstance(completed_at, int) else None,
        )
        return out


def rewrite_response(
    engine_response: JSONObject,
    base: JSONObject,
    mint_id: MintId,
    *,
    now: Callable[[], float] = time.time,
    infer_length_limit: bool = True,
) -> JSONObject:
    """A non-streamed engine answer as the sidecar's complete response object; `MalformedEvent` if it is
    not a response (the caller answers 502 and stores nothing)."""
    engine_output = engine_response.get("output")
    if not isinstance(engine_output, list) or not all(isinstance(item, dict) for item in engine_output):
        raise MalformedEvent("a response whose output is not a list of items")
    status = engine_response.get("status") or "completed"
    if status not in _TERMINAL_STATUS.values():
        raise MalformedEvent(f"a response with status {status!r}, not a finished one")
    output: list[JSONObject] = []
    for item in engine_output:
        done = complete_output_item({**item, "id": mint_id(item_id_prefix(item.get("type")))})
        if done["type"] == "function_call":
            done["call_id"] = mint_id("call")  # never the engine's: see _item_added
        output.append(done)
    usage = engine_response.get("usage")
    normalised = normalise_usage(usage) if isinstance(usage, dict) else None
    limit = base.get("max_output_tokens") if infer_length_limit else None
    status, details = _length_limited(status, engine_response, limit, normalised)
    completed_at = engine_response.get("completed_at")
    if status == "completed" and not isinstance(completed_at, int):
        completed_at = int(now())
    error = _error_of(engine_response.get("error")) if status == "failed" else None
    return {
        **base,
        "status": status,
        "output": output,
        "usage": normalised,
        "completed_at": completed_at if status == "completed" else None,
        "incomplete_details": details,
        "error": error,
    }


def _length_limited(
    status: str, response: JSONObject, limit: Any, usage: JSONObject | None
) -> tuple[str, JSONObject | None]:
    """The status to report and its incomplete_details.

    llama.cpp reports `completed` even when it stopped at max_output_tokens; the API says `incomplete`
    with reason `max_output_tokens`, and clients (the Agents SDK) branch on it.
    """
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        known = _INCOMPLETE_REASONS.get(reason) if isinstance(reason, str) else None
        return status, {"reason": known or "max_output_tokens"}
    if status == "completed" and isinstance(limit, int) and usage and usage.get("output_tokens", 0) >= limit:
        return "incomplete", {"reason": "max_output_tokens"}
    return status, None


def _error_of(error: Any) -> JSONObject:
    """A failed response's error as the spec has it (a string code and message), whatever the engine said."""
    if not isinstance(error, dict):
        return {"code": "server_error", "message": "The engine reported a failure."}
    code, message = error.get("code"), error.get("message")
    return {
        "code": code if isinstance(code, str) and code else "server_error",
        "message": message if isinstance(message, str) and message else "The engine reported a failure.",
    }


def _strip(event: JSONObject) -> JSONObject:
    """An engine event without its own numbering (the sidecar renumbers)."""
    return {key: value for key, value in event.items() if key != "sequence_number"}
