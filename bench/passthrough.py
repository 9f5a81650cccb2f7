"""The floor: a minimal aiohttp reverse proxy that forwards bytes both ways and keeps no state.

    python -m bench.passthrough --port N --upstream http://127.0.0.1:ENGINE

Built the way the sidecar is (aiohttp server, one keep-alive ClientSession, uvloop), so the difference
between the two is what being stateful costs.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    session = request.app[SESSION]
    async with session.request(
        request.method, request.app[UPSTREAM] + request.path_qs, data=body, headers=headers
    ) as upstream:
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        if "text/event-stream" not in upstream.headers.get("Content-Type", ""):
            return web.Response(status=upstream.status, body=await upstream.read(), headers=out_headers)
        response = web.StreamResponse(status=upstream.status, headers=out_headers)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=60)
    jar = aiohttp.DummyCookieJar()  # the sidecar keeps no engine cookies either: same client cost
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=jar) as session:
        app[SESSION] = session
        yield


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    import uvloop

    web.run_app(
        create_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
