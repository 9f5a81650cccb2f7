"""Every route the sidecar does not own goes to the engine unchanged, bodies streamed both ways."""

from __future__ import annotations

import contextlib

import aiohttp
from aiohttp import web

from ..appkeys import CONFIG, UPSTREAM
from ..errors import UpstreamError, UpstreamTimeout

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


async def passthrough(request: web.Request) -> web.StreamResponse:
    upstream = request.app[UPSTREAM]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    if upstream.api_key:
        headers["Authorization"] = f"Bearer {upstream.api_key}"
    elif request.app[CONFIG].auth != "none":
        headers.pop("Authorization", None)  # the client's key is ours, not the engine's
    try:
        engine = await upstream.session.request(
            request.method,
            upstream.url(request.path_qs),
            headers=headers,
            data=request.content if request.body_exists else None,
            timeout=upstream.timeout,
            allow_redirects=False,
        )
    except TimeoutError:
        raise UpstreamTimeout("The engine did not answer in time.") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"The engine is unreachable: {exc.__class__.__name__}.") from None
    async with engine:
        response = web.StreamResponse(status=engine.status, reason=engine.reason)
        for name, value in engine.headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        if engine.content_length is not None:
            response.content_length = engine.content_length
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            async for chunk in engine.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
    return response
