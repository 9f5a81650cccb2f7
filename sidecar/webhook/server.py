"""The webhook's HTTPS server: `POST /mutate` (AdmissionReview v1) and `GET /healthz`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import web

from .config import WebhookConfig
from .patch import InjectionConfig, body_response

log = logging.getLogger("convostore.webhook")

INJECTION = web.AppKey("injection", InjectionConfig)
# A pod is far below this; the API server's own request limit (3 MiB) is what really bounds a review.
MAX_REVIEW_BYTES = 8 * 1024 * 1024


async def mutate(request: web.Request) -> web.Response:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        body = b""  # answered below as not-JSON: the API server still gets a well-formed AdmissionReview
    answer = body_response(body, request.app[INJECTION])
    response = answer["response"]
    log.info(
        "admission %s: allowed=%s patched=%s%s",
        response["uid"] or "-",
        response["allowed"],
        "patch" in response,
        f" ({response['status']['message']})" if "status" in response else "",
    )
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_webhook_app(injection: InjectionConfig) -> web.Application:
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app[INJECTION] = injection
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    return app


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _mtimes(*paths: str) -> tuple[float, ...]:
    return tuple(os.stat(p).st_mtime for p in paths)


def tls_reloader(
    context: ssl.SSLContext, config: WebhookConfig
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that reloads the key pair when its files change (cert-manager and the chart rotate it
    by rewriting the mounted Secret; new handshakes then use the new pair, open connections keep theirs)."""

    async def watch() -> None:
        seen = _mtimes(config.tls_cert, config.tls_key)
        while True:
            await asyncio.sleep(config.tls_reload_seconds)
            try:
                now = _mtimes(config.tls_cert, config.tls_key)
                if now != seen:
                    context.load_cert_chain(config.tls_cert, config.tls_key)
                    seen = now
                    log.info("TLS certificate reloaded from %s", config.tls_cert)
            except (OSError, ssl.SSLError) as exc:  # half-written during a rotation: next round
                log.warning("TLS certificate not reloaded yet: %s", exc)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(watch())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def run_webhook(config: WebhookConfig) -> None:
    try:
        context = tls_context(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        print(f"convostore webhook: cannot load the TLS key pair: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app = create_webhook_app(config.injection)
    app.cleanup_ctx.append(tls_reloader(context, config))
    web.run_app(
        app,
        host=config.listen_host,
        port=config.listen_port,
        ssl_context=context,
        access_log=None,
        print=lambda _: print(
            f"convostore webhook: listening on https://{config.listen_host}:{config.listen_port}",
            file=sys.stderr,
        ),
    )
