"""Every route the sidecar does not own goes to the engine unchanged, bodies streamed both ways."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from ..appkeys import CONFIG, PASSTHROUGH_ROUTES, UPSTREAM
from ..errors import (
    BodyTooLarge,
    ClientDisconnected,
    ConvoStoreError,
    NotFound,
    RequestTimeout,
    UpstreamError,
    UpstreamTimeout,
)
from ..upstream import failure_reason

# RFC 9110 §7.6.1 hop-by-hop headers, plus those aiohttp recomputes for the new connection.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# The client's credentials towards us (a gateway's session, a claimed tenant) are not the engine's business
# once the sidecar authenticates; in `none` mode it is a transparent proxy and passes them on.
CLIENT_CREDENTIALS = {
    "none": frozenset(),
    "api_keys": frozenset({"authorization", "cookie", "x-tenant-id"}),
    "trusted_header": frozenset({"authorization", "cookie"}),
}


async def passthrough(request: web.Request) -> web.StreamResponse:
    if not request.app[PASSTHROUGH_ROUTES].allows(request.method, request.path):
        # As OpenAI answers a route it does not have: whether the engine has it is not the tenant's to know.
        raise NotFound(f"Invalid URL ({request.method} {request.path})", code="unknown_url")
    upstream = request.app[UPSTREAM]
    config = request.app[CONFIG]
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        raise BodyTooLarge(
            f"Request body of {request.content_length} bytes exceeds the limit of {config.max_body_bytes}."
        )
    dropped = HOP_BY_HOP | CLIENT_CREDENTIALS[config.auth]
    headers = forwarded_headers(request.headers, dropped)
    if upstream.api_key:
        headers["Authorization"] = f"Bearer {upstream.api_key}"
    body = ClientBody(request, config.max_body_bytes, config.client_timeout_seconds)
    try:
        engine = await upstream.session.request(
            request.method,
            # The raw target, checked by the middleware (no dot segments, no encoded slashes): the engine
            # gets the bytes the router matched, not a re-encoding of them.
            URL(upstream.url(request.raw_path), encoded=True),
            headers=headers,
            data=body.chunks() if request.body_exists else None,
            timeout=upstream.timeout,
            allow_redirects=False,
        )
    except TimeoutError:
        raise body.failure or UpstreamTimeout("The engine did not answer in time.") from None
    except aiohttp.ClientError as exc:
        raise body.failure or UpstreamError(f"The engine is unreachable: {failure_reason(exc)}.") from None
    async with engine:
        response = web.StreamResponse(status=engine.status, reason=engine.reason)
        for name, value in forwarded_headers(engine.headers, HOP_BY_HOP).items():
            response.headers.add(name, value)
        if engine.content_length is not None:
            response.content_length = engine.content_length
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            async for chunk in engine.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
    return response


def forwarded_headers(headers: MultiMapping[str], dropped: Iterable[str]) -> CIMultiDict[str]:
    """`headers` without hop-by-hop ones: those in `dropped` and those the message's own Connection
    header names (RFC 9110 §7.6.1), which are meant for this hop only."""
    names = set(dropped)
    for value in headers.getall("Connection", []):
        names.update(token.strip().lower() for token in value.split(","))
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in names)


class ClientBody:
    """The client's request body streamed to the engine, counted against the body limit and read within the
    client timeout. A failure ends the engine request (the engine sees an aborted upload, never a whole
    oversized body); `failure` then says what the client is answered instead of an engine error."""

    def __init__(self, request: web.Request, limit: int, timeout: float) -> None:
        self._content = request.content
        self._limit = limit
        self._deadline = asyncio.get_running_loop().time() + timeout
        self.failure: ConvoStoreError | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        received = 0
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    chunk = await self._content.readany()
            except TimeoutError:
                self.failure = RequestTimeout("The request body was not received in time.")
                raise
            except ConnectionResetError:
                self.failure = ClientDisconnected("The client closed the connection.")
                raise
            if not chunk:
                return
            received += len(chunk)
            if received > self._limit:
                self.failure = BodyTooLarge(f"Request body exceeds the limit of {self._limit} bytes.")
                raise self.failure
            yield chunk
