"""Server-sent events: an incremental decoder for engine streams and the encoder for client streams."""

from __future__ import annotations

import re
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

    `id:` and `retry:` are ignored: the sidecar neither reconnects to engines nor forwards their ids.
    """

    __slots__ = ("_buf", "_data", "_event", "_has_data", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._has_data = False
        self._event: str | None = None
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
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
        messages: list[SSEMessage] = []
        pos = 0
        end = len(buf)
        while pos < end:
            match = _EOL.search(buf, pos)
            if match is None:
                break
            line = buf[pos : match.start()]
            pos = match.end()
            if match.group() == b"\r" and pos == end:
                self._skip_lf = True
            message = self._line(line)
            if message is not None:
                messages.append(message)
        self._buf = buf[pos:]
        return messages

    def flush(self) -> list[SSEMessage]:
        """At end of stream: the event a sloppy engine left without its closing blank line, if any."""
        messages: list[SSEMessage] = []
        if self._buf:
            message = self._line(self._buf)
            self._buf = b""
            if message is not None:
                messages.append(message)
        message = self._line(b"")
        if message is not None:
            messages.append(message)
        return messages

    def _line(self, line: bytes) -> SSEMessage | None:
        if not line:
            return self._dispatch()
        if line[:1] == b":":
            return None
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        return None

    def _dispatch(self) -> SSEMessage | None:
        event, self._event = self._event, None
        if not self._has_data:
            return None
        data = b"\n".join(self._data)
        self._data = []
        self._has_data = False
        return SSEMessage(event=event or None, data=data)


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
