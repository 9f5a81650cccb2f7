"""Server-sent events: an incremental decoder for engine streams and the encoder for client streams."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

# Chat-completions streams end with this data payload instead of a terminal event.
DONE = b"[DONE]"

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched event: `event` is None when the stream sent no `event:` line."""

    event: str | None
    data: bytes

    @property
    def is_done(self) -> bool:
        return self.data == DONE


class SSEDecoder:
    """Parses an SSE byte stream as the WHATWG spec does, whatever the chunk boundaries are.

    Line endings are normalised to LF on arrival, so an event is the bytes up to a blank line (`\\n\\n`);
    `_buf` holds the unfinished event. `id:` and `retry:` are ignored: the sidecar neither reconnects to
    engines nor forwards their ids.
    """

    __slots__ = ("_buf", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buf = b""
        # A chunk may end between the '\r' and '\n' of one CRLF: the '\n' must not count as a blank line.
        self._skip_lf = False
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """The events completed by this chunk, in order."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if chunk.find(b"\r") >= 0:
            # Every CR is a line end (a field cannot hold one), so CRLF and lone CR both become LF.
            self._skip_lf = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pending = self._buf
        # `pending` holds no blank line, so the first one can only start in its last byte or after.
        search = len(pending) - 1 if pending else 0
        buf = pending + chunk if pending else chunk
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
                search = 0
        messages: list[SSEMessage] = []
        start = 0
        end = buf.find(b"\n\n", search)
        while end >= 0:
            message = _event(buf[start:end])
            if message is not None:
                messages.append(message)
            start = end + 2
            end = buf.find(b"\n\n", start)
        self._buf = buf[start:] if start else buf
        return messages

    def flush(self) -> list[SSEMessage]:
        """At end of stream: the event a sloppy engine left without its closing blank line, if any."""
        block, self._buf = self._buf, b""
        if block.endswith(b"\n"):
            block = block[:-1]  # the end of its last line, not a blank line
        if not block:
            return []
        message = _event(block)
        return [message] if message is not None else []


def _event(block: bytes) -> SSEMessage | None:
    """The message one event block (its lines, without the closing blank line) dispatches, if any."""
    # Fast paths for what engines send: `event: name` + one `data: payload` line, or one `data:` line.
    if block[:7] == b"event: ":
        newline = block.find(b"\n")
        if (
            newline > 7
            and block[newline + 1 : newline + 7] == b"data: "
            and block.find(b"\n", newline + 1) < 0
        ):
            return SSEMessage(block[7:newline].decode("utf-8", "replace"), block[newline + 7 :])
    elif block[:6] == b"data: " and b"\n" not in block:
        return SSEMessage(None, block[6:])
    event: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line:
            # A blank line at the start of a block (three or more LFs in a row) dispatches nothing but
            # resets the event name.
            event = None
            continue
        if line[:1] == b":":
            continue
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    if not data:
        return None
    return SSEMessage(event or None, b"\n".join(data))


def encode_sse(event: str | None, data: bytes) -> bytes:
    """One SSE frame; multi-line data becomes several `data:` lines so it round-trips."""
    head = b"event: " + event.encode() + b"\n" if event is not None else b""
    if b"\n" in data or b"\r" in data:
        lines = _EOL.split(data)
        return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


def encode_event(event: dict[str, Any]) -> bytes:
    """A Responses streaming event as its SSE frame, named by its `type`."""
    return encode_sse(event.get("type"), orjson.dumps(event))


# `event: <type>\ndata: ` per event type seen, so a frame is built with one join. orjson never writes a raw
# line break, so a payload is always a single `data:` line. Bounded: an engine can invent event types.
_FRAME_HEADS: dict[str, bytes] = {}
_FRAME_HEADS_MAX = 256


def encode_events(events: Iterable[dict[str, Any]]) -> bytes:
    """Responses streaming events as their SSE frames, back to back (what `encode_event` gives each)."""
    parts: list[bytes] = []
    append = parts.append
    for event in events:
        kind = event["type"]
        head = _FRAME_HEADS.get(kind)
        if head is None:
            head = b"event: " + kind.encode() + b"\ndata: "
            if b"\n" in head[:-7] or b"\r" in head[:-7]:
                # A type with a line break cannot be cached as one header line; the general encoder copes.
                append(encode_event(event))
                continue
            if len(_FRAME_HEADS) < _FRAME_HEADS_MAX:
                _FRAME_HEADS[kind] = head
        append(head)
        append(orjson.dumps(event))
        append(b"\n\n")
    return b"".join(parts)
