"""What every engine exchange shares: reading a whole answer or checking a stream's start, turning an engine
error into the client's, and storing a turn after the client has it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import orjson

from ..errors import ConvoStoreError, RateLimited, UpstreamError, engine_rejected
from ..turns import save_quietly
from ..upstream import EngineAnswer, failure_reason

log = logging.getLogger("convostore.engine")

# What a gateway needs to back off as the engine asked: passed on with a 429.
_RATE_LIMIT_HEADERS = ("retry-after", "retry-after-ms")
_RATE_LIMIT_PREFIX = "x-ratelimit-"
_DEFAULT_RETRY_AFTER = "1"


def engine_error(engine: EngineAnswer, body: bytes) -> ConvoStoreError:
    """The client's error for an engine's error answer: a rate limit stays a 429 with the engine's
    Retry-After and x-ratelimit-* headers; everything else as `engine_rejected` decides."""
    if engine.status != 429:
        return engine_rejected(engine.status, body)
    rejected = engine_rejected(400, body)  # the engine's message, param and code, parsed once
    headers = {
        name: value
        for name, value in engine.headers.items()
        if name.lower() in _RATE_LIMIT_HEADERS or name.lower().startswith(_RATE_LIMIT_PREFIX)
    }
    if not any(name.lower() == "retry-after" for name in headers):
        headers["Retry-After"] = _DEFAULT_RETRY_AFTER
    limited = RateLimited(rejected.message, headers=headers)
    if isinstance(rejected.code, str) and rejected.code:
        limited.code = rejected.code  # e.g. insufficient_quota
    return limited


async def require_event_stream(engine: EngineAnswer) -> None:
    """Before any byte goes to the client: the engine answered a stream request with an event stream, or
    the request fails (its error, or 502 for a 200 that is no stream) and nothing is stored."""
    # No Content-Type at all reads as application/octet-stream: let it through and judge the events.
    if engine.status < 400 and engine.content_type in ("text/event-stream", "application/octet-stream"):
        return
    async with engine:
        try:
            body = await engine.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"The engine failed while answering: {failure_reason(exc)}.") from None
    if engine.status >= 400:
        raise engine_error(engine, body)
    raise UpstreamError("The engine answered a stream request with something that is not an event stream.")


async def read_engine_json(engine: EngineAnswer) -> dict[str, Any]:
    """A non-streamed answer as a JSON object; engine errors become the OpenAI errors of docs/api.md §4."""
    async with engine:
        try:
            raw = await engine.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"The engine failed while answering: {failure_reason(exc)}.") from None
        if engine.status >= 400:
            raise engine_error(engine, raw)
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError("The engine answered something that is not JSON.") from None
    if not isinstance(answer, dict):
        raise UpstreamError("The engine answered something that is not a JSON object.")
    return answer


class _Capture(Protocol):
    @property
    def final_response(self) -> dict[str, Any] | None: ...

    def incomplete(self, reason: str) -> dict[str, Any]: ...


async def settle_departed_client(
    engine: EngineAnswer,
    capture: _Capture,
    save: Callable[[dict[str, Any]], Awaitable[Any]],
    *,
    saved: bool,
) -> None:
    """The client left mid-stream: drop the engine connection (the engine stops generating for nobody)
    and store what was captured, `incomplete` unless the answer had already finished. The reason is one the
    API defines: `max_output_tokens` says what a reader needs (the output stopped short of the model's
    end), where the others (`content_filter`, …) would claim something that did not happen."""
    engine.close()
    if not saved:
        final = capture.final_response or capture.incomplete("max_output_tokens")
        await asyncio.shield(save_quietly(save, final))
