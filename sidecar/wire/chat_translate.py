"""Responses ⇄ chat completions for engines that only serve /v1/chat/completions (pure)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import events as ev
from .captured_stream import CapturedStream
from .resource import complete_output_item, normalise_usage
from .stream_state import MalformedEvent, ResponseStreamState
from .tools import chat_tool

JSONObject = dict[str, Any]
MintId = Callable[[str], str]

# Sampling settings with the same name and meaning in both APIs.
# Sampling settings chat engines take under the same name; `stop`, `seed`, `top_k`, `min_p` and
# `repetition_penalty` are engine extensions (llama.cpp, vLLM) a client may send through Responses too.
_SAME_NAME = (
    "temperature", "top_p", "presence_penalty", "frequency_penalty", "parallel_tool_calls", "user",
    "stop", "seed", "top_k", "min_p", "repetition_penalty",
)  # fmt: skip


def responses_to_chat_request(body: JSONObject, messages: list[JSONObject]) -> JSONObject:
    """The chat-completions body for a Responses create body; `messages` is the already-built history."""
    chat: JSONObject = {"model": body.get("model"), "messages": messages}
    for name in _SAME_NAME:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    tools = [chat_tool(tool) for tool in body.get("tools") or [] if _is_function_tool(tool)]
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "allowed_tools":
        # Chat has no allowed_tools: offer only the allowed ones, with the requested mode.
        allowed = {t.get("name") for t in tool_choice.get("tools") or [] if isinstance(t, dict)}
        tools = [tool for tool in tools if tool["function"]["name"] in allowed]
        tool_choice = tool_choice.get("mode") or "auto"
    if tools:
        chat["tools"] = tools
        if tool_choice is not None:
            chat["tool_choice"] = _chat_tool_choice(tool_choice)
    elif "parallel_tool_calls" in chat:
        # Some engines (vLLM) reject parallel_tool_calls without tools.
        del chat["parallel_tool_calls"]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("stream"):
        chat["stream"] = True
        # Without this the engine never sends usage on a stream, and the stored response would lack it.
        chat["stream_options"] = {"include_usage": True}
    return chat


def chat_completion_to_output(
    chat: JSONObject, mint_id: MintId
) -> tuple[list[JSONObject], JSONObject, str, JSONObject | None]:
    """Output items, Responses usage, status and incomplete_details of a non-streamed chat completion;
    `MalformedEvent` if it is not one (the caller answers 502 and stores nothing)."""
    choice, message = chat_choice(chat)
    status, details = finish_status(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    items: list[JSONObject] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        items.append(_reasoning_item(mint_id("rs"), reasoning))
    tool_calls = message.get("tool_calls") or []
    content = message.get("content")
    refusal = message.get("refusal")
    if content or refusal or not tool_calls:
        parts = [ev.output_text_part(content or "")] if content or not refusal else []
        if refusal:
            parts.append(ev.refusal_part(refusal))
        items.append(_message_item(mint_id("msg"), parts, item_status))
    for call in tool_calls:
        function = call["function"]
        items.append(
            complete_output_item(
                {
                    "type": "function_call",
                    "id": mint_id("fc"),
                    "call_id": mint_id("call"),  # never the engine's: engines repeat them
                    "name": function.get("name") or "",
                    "arguments": function.get("arguments"),
                },
                status=item_status,
            )
        )
    return items, normalise_usage(chat.get("usage")), status, details


def chat_choice(chat: JSONObject) -> tuple[JSONObject, JSONObject]:
    """The first choice of a chat completion and its message, checked for the shapes the sidecar reads."""
    choices = chat.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedEvent("a chat completion without choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedEvent("a chat completion choice without a message")
    for field in ("content", "refusal", "reasoning_content", "reasoning"):
        if not isinstance(message.get(field) or "", str):
            raise MalformedEvent(f"a chat completion message whose {field} is not a string")
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list) or not all(
        isinstance(call, dict)
        and isinstance(call.get("function"), dict)
        and isinstance(call["function"].get("name") or "", str)
        for call in tool_calls
    ):
        raise MalformedEvent("a chat completion message whose tool_calls are not function calls")
    return choice, message


def finish_status(finish_reason: str | None) -> tuple[str, JSONObject | None]:
    """Response status and incomplete_details for a chat `finish_reason`."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


class ChatStreamTranslator(CapturedStream):
    """Chat-completion chunks in, the exact Responses event sequence out."""

    def __init__(self, base: JSONObject, mint_id: MintId, *, now: Callable[[], float] = time.time) -> None:
        self._state = ResponseStreamState(base, now=now)
        self._mint = mint_id
        self._message: int | None = None
        self._message_parts: dict[str, int] = {}  # the open message's parts: kind -> content_index
        self._reasoning: int | None = None
        self._calls: dict[int, int] = {}  # chat tool_calls index -> output_index, while open
        self._engine_call_ids: dict[str, int] = {}  # the engine's tool call id -> its chat index
        self._last_call: int | None = None
        self._call_meta: dict[int, JSONObject] = {}  # output_index -> {id, call_id, name}
        self._ids: dict[int, str] = {}
        self._call_ids: dict[int, str] = {}  # chat tool_calls index -> the call id the sidecar minted
        self._finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        """The engine said why it stopped (a `finish_reason`): the answer is whole."""
        return self._finish_reason is not None

    def call_id(self, chat_index: int) -> str | None:
        """The sidecar's call id for the engine's tool call at `chat_index` (what a chat client must see)."""
        return self._call_ids.get(chat_index)

    def feed(self, chunk: JSONObject) -> list[JSONObject]:
        if self._state.terminated:
            return []
        error = chunk.get("error")
        if error is not None and not chunk.get("choices"):
            if not isinstance(error, dict):
                return self.fail(str(error) or "engine error", "server_error")
            code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
            return self.fail(str(error.get("message") or "engine error"), str(code or "server_error"))
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise MalformedEvent("chat chunk choices is not a list")
        out = [] if self._state.streaming else self._state.start()
        usage = chunk.get("usage")
        self._state.set_usage(usage if isinstance(usage, dict) else None)
        for choice in choices:
            # n > 1 has no Responses equivalent: the first choice is the answer.
            if not isinstance(choice, dict):
                raise MalformedEvent("chat chunk choice is not an object")
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise MalformedEvent("chat chunk delta is not an object")
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out += self._reasoning_delta(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self._part_delta("output_text", content)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                out += self._part_delta("refusal", refusal)
            tool_calls = delta.get("tool_calls") or []
            if not isinstance(tool_calls, list):
                raise MalformedEvent("chat chunk tool_calls is not a list")
            for position, call in enumerate(tool_calls):
                out += self._tool_call_delta(call, position)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                out += self._close_all()
        return out

    def _end(self, done: bool) -> list[JSONObject]:
        # `[DONE]` or a finish_reason says the answer is whole; a stream cut before either is not.
        return self.finish() if done or self.finished else super()._end(done)

    def finish(self) -> list[JSONObject]:
        """At `[DONE]` or the end of the engine stream: close what is open, send the terminal event."""
        if self._state.terminated:
            return []
        out = self._state.start() + self._close_all()
        if self._state.next_output_index == 0:
            # An empty answer is still an assistant turn: clients read output_text, history needs the item.
            out += self._open_message() + self._open_part("output_text") + self._close_message()
        status, details = finish_status(self._finish_reason)
        out += self._state.terminate(status, incomplete_details=details)
        return out

    # -- items -----------------------------------------------------------------------------------------------

    def _add(self, prefix: str, item: JSONObject) -> tuple[int, str, JSONObject]:
        index = self._state.next_output_index
        item_id = self._mint(prefix)
        self._ids[index] = item_id
        added = {**item, "id": item_id}
        return index, item_id, self._state.emit(ev.output_item_added(index, added))

    def _item_status(self) -> str:
        return "incomplete" if finish_status(self._finish_reason)[0] == "incomplete" else "completed"

    def _open_message(self) -> list[JSONObject]:
        item = {"type": "message", "role": "assistant", "status": "in_progress", "content": []}
        index, _, added = self._add("msg", item)
        self._message = index
        self._message_parts = {}
        return [added]

    def _open_part(self, kind: str) -> list[JSONObject]:
        """A part of the open message for text or a refusal, in the order they come (as the whole answer's
        message has them: a refusal after the text)."""
        assert self._message is not None
        sub = self._message_parts[kind] = len(self._message_parts)
        part = ev.output_text_part() if kind == "output_text" else ev.refusal_part()
        return [self._state.emit(ev.content_part_added(self._ids[self._message], self._message, sub, part))]

    def _part_delta(self, kind: str, delta: str) -> list[JSONObject]:
        out = self._close_reasoning()
        if self._message is None:
            out += self._open_message()
        if kind not in self._message_parts:
            out += self._open_part(kind)
        assert self._message is not None
        index, sub = self._message, self._message_parts[kind]
        make = ev.output_text_delta if kind == "output_text" else ev.refusal_delta
        out.append(self._state.emit_delta(make(self._ids[index], index, sub, delta), index, sub, delta, kind))
        return out

    def _close_message(self) -> list[JSONObject]:
        if self._message is None:
            return []
        index, self._message = self._message, None
        item_id = self._ids[index]
        out, parts = [], []
        for kind, sub in self._message_parts.items():
            text = self._state.text(index, "content", sub)
            if kind == "output_text":
                part = ev.output_text_part(text)
                out.append(self._state.emit(ev.output_text_done(item_id, index, sub, text)))
            else:
                part = ev.refusal_part(text)
                out.append(self._state.emit(ev.refusal_done(item_id, index, sub, text)))
            out.append(self._state.emit(ev.content_part_done(item_id, index, sub, part)))
            parts.append(part)
        out.append(
            self._state.emit(ev.output_item_done(index, _message_item(item_id, parts, self._item_status())))
        )
        return out

    def _reasoning_delta(self, delta: str) -> list[JSONObject]:
        out = self._close_message()
        if self._reasoning is None:
            index, item_id, added = self._add("rs", {"type": "reasoning", "summary": [], "content": []})
            self._reasoning = index
            part = self._state.emit(ev.content_part_added(item_id, index, 0, ev.reasoning_text_part()))
            out += [added, part]
        index = self._reasoning
        event = ev.reasoning_text_delta(self._ids[index], index, 0, delta)
        out.append(self._state.emit_delta(event, index, 0, delta, "reasoning_text"))
        return out

    def _close_reasoning(self) -> list[JSONObject]:
        if self._reasoning is None:
            return []
        index, self._reasoning = self._reasoning, None
        item_id = self._ids[index]
        text = self._state.text(index, "content", 0)
        return [
            self._state.emit(ev.reasoning_text_done(item_id, index, 0, text)),
            self._state.emit(ev.content_part_done(item_id, index, 0, ev.reasoning_text_part(text))),
            self._state.emit(ev.output_item_done(index, _reasoning_item(item_id, text))),
        ]

    def _tool_call_delta(self, call: JSONObject, position: int) -> list[JSONObject]:
        out: list[JSONObject] = []
        if not isinstance(call, dict):
            raise MalformedEvent("chat tool call is not an object")
        chat_index = self._call_index(call, position)
        function = call.get("function") or {}
        if not isinstance(function, dict) or not isinstance(function.get("name") or "", str):
            raise MalformedEvent("chat tool call function is not an object with a string name")
        if chat_index not in self._calls:
            out += self._close_reasoning() + self._close_message()
            meta = {"call_id": self._mint("call"), "name": function.get("name") or ""}
            self._call_ids[chat_index] = meta["call_id"]
            item = {"type": "function_call", "status": "in_progress", "arguments": "", **meta}
            index, _, added = self._add("fc", item)
            self._calls[chat_index] = index
            self._call_meta[index] = meta
            out.append(added)
        index = self._calls[chat_index]
        meta = self._call_meta[index]
        if function.get("name") and not meta["name"]:
            meta["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(self._state.emit(ev.function_call_arguments_delta(self._ids[index], index, arguments)))
        return out

    def _call_index(self, call: JSONObject, position: int) -> int:
        """Which call a tool-call delta continues: its `index`. Without one (a sloppy engine): the latest
        call when it comes first in its chunk with no id or that call's id, else a new call. Written into
        the delta, so the chat relay (chat_chunks.py) pairs it with the same call."""
        index = call.get("index")
        engine_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        if not isinstance(index, int) or isinstance(index, bool):
            continues = (
                position == 0
                and self._last_call is not None
                and (engine_id is None or self._engine_call_ids.get(engine_id) == self._last_call)
            )
            index = self._last_call if continues else max(self._call_ids, default=-1) + 1
            assert index is not None
            call["index"] = index
        if engine_id is not None:
            self._engine_call_ids.setdefault(engine_id, index)
        self._last_call = index
        return index

    def _close_calls(self) -> list[JSONObject]:
        out: list[JSONObject] = []
        for index in sorted(self._calls.values()):
            item_id = self._ids[index]
            arguments = self._state.text(index, "arguments")
            item = {"type": "function_call", "id": item_id, **self._call_meta[index], "arguments": arguments}
            out.append(self._state.emit(ev.function_call_arguments_done(item_id, index, arguments)))
            out.append(self._state.emit(ev.output_item_done(index, {**item, "status": self._item_status()})))
        self._calls.clear()
        return out

    def _close_all(self) -> list[JSONObject]:
        return self._close_reasoning() + self._close_message() + self._close_calls()


def tool_call_index(call: JSONObject, position: int) -> int:
    """Which call a chat tool-call delta continues: its `index`, else (a non-stream message, a sloppy
    engine) its place in the list."""
    index = call.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def _message_item(item_id: str, parts: list[JSONObject], status: str) -> JSONObject:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": parts}


def _reasoning_item(item_id: str, text: str) -> JSONObject:
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [ev.reasoning_text_part(text)]}


def _is_function_tool(tool: Any) -> bool:
    return isinstance(tool, dict) and tool.get("type") == "function"


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        return {"type": "function", "function": {"name": name}}
    return choice


def _response_format(text: Any) -> JSONObject | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {
            key: fmt[key] for key in ("name", "description", "schema", "strict") if fmt.get(key) is not None
        }
        return {"type": "json_schema", "json_schema": schema}
    return None
