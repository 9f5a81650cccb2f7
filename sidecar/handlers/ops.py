"""The sidecar's own endpoints under /convostore/: liveness, readiness, metrics."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import METRICS, STORE, UPSTREAM
from ..drain import DRAIN
from ..redact import mask_userinfo
from ..store.base import StoreDown
from .common import json_response

routes = web.RouteTableDef()


@routes.get("/convostore/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/convostore/readyz")
async def readyz(request: web.Request) -> web.Response:
    if request.app[DRAIN].draining:  # on SIGTERM, at once: the load balancer stops sending new work
        return json_response({"status": "unavailable", "reasons": ["draining"]}, status=503)
    reasons: list[str] = []
    try:
        await request.app[STORE].ping()
    except StoreDown as exc:
        reasons.append(f"store unreachable: {exc}")
    engine = await request.app[UPSTREAM].reachable()
    if engine:
        reasons.append(engine)
    if reasons:
        # Unauthenticated: the reasons name the engine and the store, never their credentials.
        shown = [mask_userinfo(reason) for reason in reasons]
        return json_response({"status": "unavailable", "reasons": shown}, status=503)
    return json_response({"status": "ready", "upstream_api": request.app[UPSTREAM].api})


@routes.get("/convostore/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain", charset="utf-8")
