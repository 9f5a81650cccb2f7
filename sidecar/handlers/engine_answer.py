"""What every engine exchange shares: reading a whole answer, and storing a turn after the client has it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import orjson

from ..errors import UpstreamError, engine_rejected

log = logging.getLogger("convostore.engine")


async def read_engine_json(engine: aiohttp.ClientResponse) -> dict[str, Any]:
    """A non-streamed answer as a JSON object; engine errors become the OpenAI errors of CONTRACT §4."""
    async with engine:
        try:
            raw = await engine.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"The engine failed while answering: {exc.__class__.__name__}.") from None
        if engine.status >= 400:
            raise engine_rejected(engine.status, raw)
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError("The engine answered something that is not JSON.") from None
    if not isinstance(answer, dict):
        raise UpstreamError("The engine answered something that is not a JSON object.")
    return answer


async def save_quietly(save: Callable[[dict[str, Any]], Awaitable[Any]], final: dict[str, Any]) -> None:
    """Store a streamed turn. The client already has (part of) its answer, so a store failure is logged,
    not raised into a stream that can no longer carry an error status."""
    try:
        await save(final)
    except Exception:
        log.exception("storing the streamed turn failed (response %s)", final.get("id"))


class _Capture(Protocol):
    @property
    def final_response(self) -> dict[str, Any] | None: ...

    def incomplete(self, reason: str) -> dict[str, Any]: ...


async def settle_departed_client(
    engine: aiohttp.ClientResponse,
    capture: _Capture,
    save: Callable[[dict[str, Any]], Awaitable[Any]],
    *,
    saved: bool,
) -> None:
    """The client left mid-stream: drop the engine connection (the engine stops generating for nobody)
    and store what was captured, `incomplete` unless the answer had already finished."""
    engine.close()
    if not saved:
        final = capture.final_response or capture.incomplete("client_disconnected")
        await asyncio.shield(save_quietly(save, final))
