"""A LiteLLM callback: plain chat completions with stateful conversations through ConvoStore's session API.

    import litellm
    from convostore_callback import ConvoStoreSessions

    litellm.callbacks = [ConvoStoreSessions("http://convostore:8080")]
    reply = await litellm.acompletion(
        model="openai/gemma", api_base="http://vllm:8000/v1", api_key="none",
        messages=[{"role": "user", "content": "And in Celsius?"}],      # only the new message
        metadata={"convostore_conversation_id": "support-4711"},
    )
    reply._hidden_params["convostore"]  # {"conversation_id", "response_id", "version"}

Before the call it resolves the conversation (`GET /v1/sessions/resolve?conversation_id=…`) and puts the
stored history in front of the caller's messages; after the engine answered it appends the caller's messages
(`POST /v1/sessions/{id}/append`) and stores the answer (`POST /v1/sessions/{id}/store_response`). A call
without `metadata["convostore_conversation_id"]` is left alone.

Which hooks, and why (checked against litellm 1.110 without the proxy server): `async_pre_call_hook` and
`async_post_call_success_hook` only run inside LiteLLM's proxy server, and `async_log_pre_api_call` /
`async_log_success_event` are logging hooks (the first cannot change the request, the second runs after the
caller already has the answer, so the next turn could miss it). The SDK's async entry points
(`litellm.acompletion`, and `litellm.Router`) do await `async_pre_call_deployment_hook`, whose returned kwargs
replace the request, and `async_post_call_success_deployment_hook`, before the answer is returned. The
synchronous `litellm.completion` runs neither, and a streamed answer skips the success hook, so this callback
serves non-streamed `acompletion` calls and refuses a streamed one rather than lose the turn; for streaming
(or sync code) use `stateful_completion` below, or let the sidecar itself keep the state: send the call to
the sidecar with the header `X-Conversation-Id`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.types.utils import CallTypes, ModelResponse

CONVERSATION_KEY = "convostore_conversation_id"
# System/developer messages steer one call: sent first, never stored (else each turn would add another copy).
_INSTRUCTION_ROLES = frozenset({"system", "developer"})
_CHAT_CALLS = frozenset({CallTypes.acompletion, CallTypes.completion})


class ConvoStoreError(RuntimeError):
    """The session API refused a call or could not be reached."""


def conversation_id_of(kwargs: Mapping[str, Any]) -> str | None:
    metadata = kwargs.get("metadata") or {}
    value = metadata.get(CONVERSATION_KEY) if isinstance(metadata, Mapping) else None
    return str(value) if value else None


def clean_assistant_message(response: ModelResponse) -> dict[str, Any]:
    """The answer as a chat message holding only what a chat history carries (no LiteLLM extras)."""
    message = response.choices[0].message  # type: ignore[union-attr]
    clean: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        clean["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    return clean


class SessionClient:
    """The three session-API calls the kit needs, on one `httpx.AsyncClient`."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConvoStoreError(f"ConvoStore unreachable: {method} {path}: {exc!r}") from exc
        if resp.status_code == 404 and path.endswith("/resolve"):
            return None
        if resp.status_code >= 400:
            raise ConvoStoreError(f"ConvoStore {method} {path}: {resp.status_code} {resp.text}")
        return resp.json()

    async def history(self, conversation_id: str) -> list[dict[str, Any]]:
        """The stored chat history, or [] for a conversation ConvoStore has not seen yet."""
        found = await self._call("GET", "/v1/sessions/resolve", params={"conversation_id": conversation_id})
        return list(found["messages"]) if found else []

    async def record_turn(
        self, conversation_id: str, new_messages: list[dict[str, Any]], response: ModelResponse
    ) -> dict[str, Any]:
        """Appends the caller's messages, then stores the answer; returns store_response's answer."""
        if new_messages:
            path = f"/v1/sessions/{conversation_id}/append"
            await self._call("POST", path, json={"messages": new_messages})
        completion = {
            "object": "chat.completion",
            "model": response.model,
            "choices": [{"message": clean_assistant_message(response)}],
        }
        usage = getattr(response, "usage", None)
        if usage is not None:
            completion["usage"] = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }
        stored: dict[str, Any] = await self._call(
            "POST", f"/v1/sessions/{conversation_id}/store_response", json={"response": completion}
        )
        return stored


def split_messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(instructions, new turn messages): system/developer messages steer the call, the rest is stored."""
    instructions = [dict(m) for m in messages if dict(m).get("role") in _INSTRUCTION_ROLES]
    turn = [dict(m) for m in messages if dict(m).get("role") not in _INSTRUCTION_ROLES]
    return instructions, turn


class ConvoStoreSessions(CustomLogger):  # type: ignore[misc]
    """`litellm.callbacks = [ConvoStoreSessions(url)]`: stateful `acompletion` keyed by a metadata id."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 10.0) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        # litellm_call_id -> (conversation id, the caller's new messages), from the pre- to the post-call
        # hook; a failed call's entry goes in the failure hook.
        self._pending: dict[str, tuple[str, list[dict[str, Any]]]] = {}

    @asynccontextmanager
    async def sessions(self) -> AsyncIterator[SessionClient]:
        # A client per call: LiteLLM may run hooks on another event loop, and a pool is bound to one.
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout) as c:
            yield SessionClient(c)

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: CallTypes | None
    ) -> dict[str, Any] | None:
        conversation_id = conversation_id_of(kwargs)
        if conversation_id is None or call_type not in _CHAT_CALLS:
            return None
        if kwargs.get("stream"):
            # The success hook does not run for streams, so the turn would be lost: refuse, don't half-work.
            raise ConvoStoreError("ConvoStoreSessions serves non-streamed calls; use stateful_completion")
        instructions, turn = split_messages(kwargs.get("messages") or [])
        async with self.sessions() as sessions:
            history = await sessions.history(conversation_id)
        self._pending[str(kwargs["litellm_call_id"])] = (conversation_id, turn)
        return {**kwargs, "messages": [*instructions, *history, *turn]}

    async def async_post_call_success_deployment_hook(
        self, request_data: dict[str, Any], response: Any, call_type: CallTypes | None
    ) -> Any:
        pending = self._pending.pop(str(request_data.get("litellm_call_id")), None)
        if pending is None or not isinstance(response, ModelResponse):
            return None
        conversation_id, turn = pending
        async with self.sessions() as sessions:
            stored = await sessions.record_turn(conversation_id, turn, response)
        response._hidden_params["convostore"] = stored
        return response

    async def async_post_call_failure_deployment_hook(
        self, request_data: Mapping[str, Any], exception: Exception, call_type: CallTypes | None
    ) -> None:
        # The engine failed: nothing is stored, so a retry starts from the same history.
        self._pending.pop(str(request_data.get("litellm_call_id")), None)


async def stateful_completion(
    *,
    convostore_url: str,
    conversation_id: str,
    messages: list[dict[str, Any]],
    convostore_api_key: str | None = None,
    **completion_kwargs: Any,
) -> Any:
    """`litellm.acompletion(messages=…, **completion_kwargs)` with ConvoStore history, streamed or not.

    Not streamed: the turn is stored before the answer is returned. Streamed: returns an async iterator of
    LiteLLM chunks; the turn is stored once the caller has consumed the whole stream (an abandoned stream
    stores nothing).
    """
    store = ConvoStoreSessions(convostore_url, api_key=convostore_api_key)
    instructions, turn = split_messages(messages)
    async with store.sessions() as sessions:
        history = await sessions.history(conversation_id)
    answer = await litellm.acompletion(messages=[*instructions, *history, *turn], **completion_kwargs)
    if not completion_kwargs.get("stream"):
        async with store.sessions() as sessions:
            answer._hidden_params["convostore"] = await sessions.record_turn(conversation_id, turn, answer)
        return answer

    async def record_when_consumed() -> AsyncIterator[Any]:
        chunks = []
        async for chunk in answer:
            chunks.append(chunk)
            yield chunk
        whole = litellm.stream_chunk_builder(chunks, messages=[*instructions, *history, *turn])
        async with store.sessions() as sessions:
            await sessions.record_turn(conversation_id, turn, whole)

    return record_when_consumed()
