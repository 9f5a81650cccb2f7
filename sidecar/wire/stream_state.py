"""What a Responses stream has said so far: sequence numbers, lifecycle, partial output, the final object."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import events as ev
from .resource import complete_output_item, normalise_usage

JSONObject = dict[str, Any]

# (output_index, field, index): the text pieces of one growing string, joined only when read so a long
# answer costs O(n) instead of re-copying the whole text on every delta.
_BufferKey = tuple[int, str, int]

_CONTENT_DELTAS = frozenset(
    {"response.output_text.delta", "response.reasoning_text.delta", "response.reasoning.delta"}
)
_CONTENT_DONES = frozenset(
    {"response.output_text.done", "response.reasoning_text.done", "response.reasoning.done"}
)
_PART_TYPE_BY_EVENT = {
    "response.output_text.delta": "output_text",
    "response.refusal.delta": "refusal",
    "response.reasoning_text.delta": "reasoning_text",
    "response.reasoning.delta": "reasoning_text",
}


class ResponseStreamState:
    """Stamps every outgoing event and keeps the output it describes.

    Both the stream rewriter and the chat translator emit through one of these, so sequence numbers,
    the lifecycle (created → in_progress → … → one terminal event) and the captured output of an
    interrupted stream are handled in one place. It observes the events the client sees, so what is
    stored is exactly what was streamed.
    """

    def __init__(self, base: JSONObject, *, now: Callable[[], float] = time.time) -> None:
        self._base = base
        self._now = now
        self._seq = 0
        self._created = False
        self._in_progress = False
        self._items: dict[int, JSONObject] = {}
        self._done: set[int] = set()
        self._buffers: dict[_BufferKey, list[str]] = {}
        self._status: str | None = None
        self._usage: JSONObject | None = None
        self._final: JSONObject | None = None
        # The events stamped since `begin_batch()`: what a translator that raised mid-event had emitted
        # but never returned, so the relay can still send them (sequence numbers stay gapless).
        self._batch: list[JSONObject] = []

    # -- reading ---------------------------------------------------------------------------------------------

    @property
    def status(self) -> str | None:
        """The terminal status once the stream has ended, else None."""
        return self._status

    @property
    def terminated(self) -> bool:
        return self._status is not None

    @property
    def streaming(self) -> bool:
        """Created and in_progress sent, not yet ended: a delta needs no lifecycle event first."""
        return self._in_progress and self._created and self._status is None

    @property
    def usage(self) -> JSONObject:
        return normalise_usage(self._usage)

    @property
    def final_response(self) -> JSONObject | None:
        return self._final

    @property
    def next_output_index(self) -> int:
        return len(self._items)

    @property
    def output_items(self) -> list[JSONObject]:
        """Every item so far, finished or not; an unfinished one is marked `incomplete`."""
        return [self.item(index, status="incomplete") for index in sorted(self._items)]

    def open_indices(self) -> list[int]:
        return [index for index in sorted(self._items) if index not in self._done]

    def is_open(self, output_index: int) -> bool:
        return output_index in self._items and output_index not in self._done

    def item(self, output_index: int, *, status: str = "incomplete") -> JSONObject:
        """Item `output_index` as streamed so far, its buffered text joined, spec-complete."""
        item = self._items[output_index]
        if output_index in self._done:
            return item
        item = _copy_item(item)
        if "status" in item:
            # An open item carries the in_progress of its added event; reading it now finishes it.
            item["status"] = status
        for (index, field, sub), pieces in self._buffers.items():
            if index == output_index:
                _apply_text(item, field, sub, "".join(pieces))
        return complete_output_item(item, status=status)

    def text(self, output_index: int, field: str, sub: int = 0) -> str:
        return "".join(self._buffers.get((output_index, field, sub), ()))

    def set_usage(self, usage: JSONObject | None) -> None:
        if usage:
            self._usage = usage

    # -- emitting --------------------------------------------------------------------------------------------

    def begin_batch(self) -> None:
        self._batch.clear()

    def batch(self) -> list[JSONObject]:
        """The events stamped since `begin_batch()`, in order."""
        return list(self._batch)

    def emit(self, event: JSONObject) -> JSONObject:
        """Record what `event` says, stamp the next sequence number on it, and return it. An event of the
        wrong shape raises `MalformedEvent` before anything is recorded or stamped."""
        self._observe(event)
        event["sequence_number"] = self._seq
        self._seq += 1
        self._batch.append(event)
        return event

    def emit_delta(
        self, event: JSONObject, output_index: int, sub: int, delta: str, part_type: str
    ) -> JSONObject:
        """`emit` for a content delta (most of a stream) to open item `output_index`, content part `sub`."""
        event["sequence_number"] = self._seq
        self._seq += 1
        self._batch.append(event)
        pieces = self._buffers.get((output_index, "content", sub))
        if pieces is None:
            self._buffers[(output_index, "content", sub)] = [delta]
        else:
            pieces.append(delta)
        self._ensure_part(output_index, sub, part_type)
        return event

    def start(self) -> list[JSONObject]:
        """`response.created` and `response.in_progress`, each the first time only."""
        out: list[JSONObject] = []
        if not self._created:
            self._created = True
            out.append(self.emit(ev.lifecycle("response.created", self.snapshot("in_progress"))))
        if not self._in_progress:
            self._in_progress = True
            out.append(self.emit(ev.lifecycle("response.in_progress", self.snapshot("in_progress"))))
        return out

    def created(self) -> list[JSONObject]:
        if self._created:
            return []
        self._created = True
        return [self.emit(ev.lifecycle("response.created", self.snapshot("in_progress")))]

    def snapshot(self, status: str, **fields: Any) -> JSONObject:
        """The sidecar's response object with `status` and any overriding fields."""
        return {**self._base, "status": status, **fields}

    def terminate(
        self,
        status: str,
        *,
        incomplete_details: JSONObject | None = None,
        error: JSONObject | None = None,
        completed_at: int | None = None,
        output: list[JSONObject] | None = None,
    ) -> list[JSONObject]:
        """Close the stream: the final response object and its one terminal event."""
        if self._status is not None:
            return []
        final = self._final_response(status, incomplete_details, error, completed_at, output)
        out = self.start()
        out.append(self.emit(ev.lifecycle(ev.TERMINAL_BY_STATUS.get(status, "response.completed"), final)))
        return out

    def fail(self, message: str, code: str) -> list[JSONObject]:
        """The engine died mid-stream: `response.failed` carrying the partial output and the error."""
        error = {"code": code, "message": message}
        try:
            return self.terminate("failed", error=error)
        except Exception:
            # What the engine streamed cannot even be read back: fail with no output rather than not at all.
            self._usage = None
            return self.terminate("failed", error=error, output=[])

    def incomplete(self, reason: str) -> JSONObject:
        """The client went away: the response to store, with what was streamed so far. Emits nothing."""
        if self._final is not None:
            return self._final
        return self._final_response("incomplete", {"reason": reason}, None, None, None)

    def _final_response(
        self,
        status: str,
        incomplete_details: JSONObject | None,
        error: JSONObject | None,
        completed_at: int | None,
        output: list[JSONObject] | None,
    ) -> JSONObject:
        if status == "completed" and completed_at is None:
            completed_at = int(self._now())
        # Built before anything is recorded: if reading the output back raises, the stream is still open.
        final = self.snapshot(
            status,
            output=self.output_items if output is None else output,
            usage=normalise_usage(self._usage) if self._usage is not None else None,
            completed_at=completed_at if status == "completed" else None,
            incomplete_details=incomplete_details if status == "incomplete" else None,
            error=error,
        )
        self._status, self._final = status, final
        return final

    # -- observing -------------------------------------------------------------------------------------------

    def _observe(self, event: JSONObject) -> None:
        """Record what `event` says about the output. Each field is checked before anything changes: an
        engine's event of the wrong shape raises `MalformedEvent` and leaves the state as it was."""
        kind = event["type"]
        index = event.get("output_index")
        if not isinstance(index, int):
            return
        if kind == "response.output_item.added":
            self._items[index] = _copy_item(_item(event))
            self._done.discard(index)
        elif kind == "response.output_item.done":
            # Kept by reference: nothing mutates an item after its done event.
            self._items[index] = _item(event)
            self._done.add(index)
            for key in [key for key in self._buffers if key[0] == index]:
                del self._buffers[key]
        elif index in self._done or index not in self._items:
            return
        elif kind == "response.content_part.added" or kind == "response.content_part.done":
            sub = _sub_index(event, "content_index")
            part = event.get("part")
            if not isinstance(part, dict):
                raise MalformedEvent(f"{kind} without a part object")
            content = self._items[index].setdefault("content", [])
            while len(content) <= sub:
                content.append({})
            content[sub] = dict(part)
            if kind == "response.content_part.done":
                self._buffers.pop((index, "content", sub), None)
        elif kind in _CONTENT_DELTAS or kind == "response.refusal.delta":
            key = (index, "content", _sub_index(event, "content_index"))
            self._buffers.setdefault(key, []).append(_text_field(event, "delta"))
            self._ensure_part(index, key[2], _PART_TYPE_BY_EVENT[kind])
        elif kind in _CONTENT_DONES:
            key = (index, "content", _sub_index(event, "content_index"))
            self._buffers[key] = [_text_field(event, "text")]
        elif kind == "response.refusal.done":
            key = (index, "content", _sub_index(event, "content_index"))
            self._buffers[key] = [_text_field(event, "refusal")]
        elif kind == "response.function_call_arguments.delta":
            self._buffers.setdefault((index, "arguments", 0), []).append(_text_field(event, "delta"))
        elif kind == "response.function_call_arguments.done":
            self._buffers[(index, "arguments", 0)] = [_text_field(event, "arguments")]
        elif kind == "response.reasoning_summary_text.delta":
            key = (index, "summary", _sub_index(event, "summary_index"))
            self._buffers.setdefault(key, []).append(_text_field(event, "delta"))
        elif kind == "response.reasoning_summary_text.done":
            key = (index, "summary", _sub_index(event, "summary_index"))
            self._buffers[key] = [_text_field(event, "text")]

    def _ensure_part(self, index: int, sub: int, part_type: str) -> None:
        content = self._items[index].setdefault("content", [])
        if len(content) > sub and content[sub]:
            return
        while len(content) <= sub:
            content.append({})
        if not content[sub]:
            content[sub] = {"type": part_type, "text": ""} if part_type != "refusal" else {"type": "refusal"}


class MalformedEvent(ValueError):
    """An engine event of the right type but the wrong shape (a delta that is no string, an item that is
    no object): the stream cannot go on truthfully, so the relay ends it failed."""


def _item(event: JSONObject) -> JSONObject:
    item = event.get("item")
    if not isinstance(item, dict):
        raise MalformedEvent(f"{event['type']} without an item object")
    for field in ("content", "summary"):
        parts = item.get(field)
        if parts is not None and not (isinstance(parts, list) and all(isinstance(p, dict) for p in parts)):
            raise MalformedEvent(f"{event['type']}: item {field} is not a list of objects")
    return item


def _sub_index(event: JSONObject, field: str) -> int:
    sub = event.get(field, 0)
    if not isinstance(sub, int) or isinstance(sub, bool) or not 0 <= sub < 1024:
        raise MalformedEvent(f"{event['type']}: {field} {sub!r} is not a small index")
    return sub


def _text_field(event: JSONObject, field: str) -> str:
    text = event.get(field)
    if not isinstance(text, str):
        raise MalformedEvent(f"{event['type']}: {field} is not a string")
    return text


def _copy_item(item: JSONObject) -> JSONObject:
    copy = dict(item)
    for field in ("content", "summary"):
        if isinstance(item.get(field), list):
            copy[field] = [dict(part) for part in item[field]]
    return copy


def _apply_text(item: JSONObject, field: str, sub: int, text: str) -> None:
    if field == "arguments":
        item["arguments"] = text
        return
    parts = item.setdefault(field, [])
    while len(parts) <= sub:
        parts.append({"type": "summary_text" if field == "summary" else "output_text"})
    part = parts[sub]
    if part.get("type") == "refusal":
        part["refusal"] = text
    else:
        part["text"] = text
