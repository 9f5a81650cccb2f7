"""What a stateful chat client receives of an engine's chat-completions stream (pure).

The engine's chunks pass as they came, except: tool calls carry the call ids the sidecar minted and stores
(the client answers with them, so the stored call and its output pair), a usage chunk goes out only if the
client asked for one (the sidecar always asks the engine, to store usage), and a failed answer ends with an
error chunk instead of `[DONE]`. A ChatStreamTranslator reads every chunk alongside and captures the turn.
"""

from __future__ import annotations

from typing import Any

import orjson

from .chat_translate import ChatStreamTranslator, tool_call_index
from .sse import DONE, SSEMessage, encode_sse

JSONObject = dict[str, Any]

DONE_FRAME = b"data: [DONE]\n\n"


class ChatClientStream:
    def __init__(self, translator: ChatStreamTranslator, *, include_usage: bool) -> None:
        self._translator = translator
        self._include_usage = include_usage
        self._announced: set[int] = set()  # tool calls whose id the client has been given

    @property
    def ended(self) -> bool:
        return self._translator.status is not None

    def feed(self, messages: list[SSEMessage]) -> bytes:
        """The frames to send for these engine events; after the answer ended, nothing."""
        frames = []
        for message in messages:
            if self.ended:
                break
            frames.append(self._frame(message.data))
        return b"".join(frames)

    def end(self) -> bytes:
        """The engine's stream ended: `[DONE]` if its answer was whole, else the error chunk."""
        if self.ended:
            return b""
        self._translator.end(done=False)
        return self._closing()

    def fail(self, message: str) -> bytes:
        """The engine (or the relay) failed mid-stream: the error chunk."""
        if self.ended:
            return b""
        self._translator.fail(message, "server_error")
        return self._closing()

    def _frame(self, data: bytes) -> bytes:
        if data == DONE:
            self._translator.end(done=True)
            return self._closing()
        if not data.strip():
            return b""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._translator.fail("The engine sent an event that is not JSON.", "server_error")
            return self._closing()
        self._translator.translate(chunk)
        if self.ended:  # an error chunk from the engine, or a chunk of the wrong shape
            return self._closing()
        changed = self._rewrite_call_ids(chunk)
        if not self._include_usage and chunk.get("usage") is not None:
            if not chunk.get("choices"):
                return b""  # `choices: []` breaks the usual `chunk.choices[0].delta` loop
            del chunk["usage"]
            changed = True
        return encode_sse(None, orjson.dumps(chunk) if changed else data)

    def _rewrite_call_ids(self, chunk: JSONObject) -> bool:
        """Put the sidecar's call ids on the chunk's tool calls (the translator has read and checked
        it); True if anything changed."""
        changed = False
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # only the first choice is stored, so only its ids need to match
            for position, call in enumerate((choice.get("delta") or {}).get("tool_calls") or []):
                chat_index = tool_call_index(call, position)
                minted = self._translator.call_id(chat_index)
                if minted is None or ("id" not in call and chat_index in self._announced):
                    continue
                self._announced.add(chat_index)
                if call.get("id") != minted:
                    call["id"] = minted
                    changed = True
        return changed

    def _closing(self) -> bytes:
        final = self._translator.final_response
        if final is None or final["status"] != "failed":
            return DONE_FRAME
        error = final.get("error") or {}
        message = str(error.get("message") or "The engine failed.")
        return encode_sse(None, orjson.dumps(chat_error(message, str(error.get("code") or "server_error"))))


def chat_error(message: str, code: str = "server_error") -> JSONObject:
    """The error chunk that ends a failed chat stream (the openai SDK raises it as an APIError)."""
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}


def with_sidecar_call_ids(message: JSONObject, translator: ChatStreamTranslator) -> None:
    """A non-streamed answer's tool calls under the call ids the sidecar minted and stored."""
    for position, call in enumerate(message.get("tool_calls") or []):
        minted = translator.call_id(tool_call_index(call, position))
        if minted is not None:
            call["id"] = minted
