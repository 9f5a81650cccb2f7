"""create_app(config): routes, middlewares and the process-wide resources, opened and closed in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web
from aiohttp.typedefs import Middleware

from .appkeys import AUTH, CONFIG, CONTEXT, METRICS, PASSTHROUGH_ROUTES, STORE, UPSTREAM
from .auth import Authenticator
from .config import Config
from .context.window import open_context_window
from .drain import DRAIN, Drain
from .handlers import (
    chat,
    compact,
    conversations,
    input_tokens,
    openapi,
    ops,
    response_objects,
    responses,
    sessions,
    websocket,
)
from .handlers.passthrough import passthrough
from .metrics import Metrics
from .middleware import PUBLIC_RESOURCES, request_context
from .passthrough_routes import passthrough_routes
from .quota import QUOTAS, CountingStore, Quotas, enforce_quotas, reconciling
from .runs.context import runs_context
from .store import MemoryStore, Store, open_store
from .store.aliases import AliasedStore
from .store.lazy import LazyStore
from .store.redis_wait import Replication
from .store_metrics import MeteredStore
from .tracing import Tracing
from .upstream import upstream_context


def create_app(config: Config) -> web.Application:
    # The body limit is enforced by read_body with an OpenAI error; aiohttp's own cap sits just above it.
    tracing = Tracing.from_env()
    drain = Drain(config.drain_seconds)
    quotas = Quotas(config.policy.get("tenants") or {})
    # Only middlewares with work to do: each layer costs every request a few µs. Exporting spans, tracing's
    # is outermost (every log line and span of a request has its trace); request_context opens the trace
    # otherwise, and counts each request for the drain around its handler.
    middlewares: list[Middleware] = [tracing.middleware()] if tracing.enabled else []
    middlewares.append(request_context)
    if quotas.any:
        middlewares.append(enforce_quotas)
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes + 1)
    app[CONFIG] = config
    app[DRAIN] = drain
    app.on_response_prepare.append(drain.on_response_prepare)
    app[AUTH] = Authenticator(config.auth, config.policy.get("tenants") or {})
    app[QUOTAS] = quotas
    app[METRICS] = Metrics()
    app[CONTEXT] = open_context_window(config.policy, app[METRICS])
    app[PASSTHROUGH_ROUTES] = passthrough_routes(config.policy.get("passthrough"), config.auth)
    app.cleanup_ctx.append(tracing.context)
    app.cleanup_ctx.append(_store_context)
    app.cleanup_ctx.append(_upstream_context)
    app.cleanup_ctx.append(runs_context)  # background runs: they need the store and the engine
    app.cleanup_ctx.append(_summaries_context)  # upstream/http summaries being written: the same
    app.cleanup_ctx.append(drain.context)  # last in, first out: before the store and the engine close
    # Only the exact routes of ops (liveness, readiness, metrics) and openapi.json are served unauthenticated.
    app[PUBLIC_RESOURCES] = frozenset(
        route.resource
        for route in [*app.add_routes(ops.routes), *app.add_routes(openapi.routes)]
        if route.resource is not None
    )
    app.add_routes(sessions.routes)
    app.add_routes(websocket.routes)  # GET /v1/responses: WebSocket mode; a plain GET is the engine's
    app.add_routes(responses.routes)
    # Before response_objects: these fixed paths must not be read as /v1/responses/{response_id}/...
    app.add_routes(input_tokens.routes)
    app.add_routes(compact.routes)
    app.add_routes(response_objects.routes)
    app.add_routes(conversations.routes)
    app.add_routes(chat.routes)
    app.router.add_route("*", "/{tail:.*}", passthrough)  # last: everything else is the engine's
    return app


async def _store_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    wait = Replication(config.redis_wait_replicas, config.redis_wait_timeout_ms)
    connect = partial(open_store, config.redis_url, config.ttl_seconds, wait=wait if wait.replicas else None)
    # Redis may be down when the sidecar starts (it restarts too): the sidecar comes up anyway, answers
    # 503 store_unavailable on stateful routes, and connects in the background.
    store: Store = await (connect() if config.redis_url.startswith("memory://") else LazyStore.open(connect))
    metered = MeteredStore(store, app[METRICS])
    # Gateways' own response ids (store_response) become the store's before any call is metered or counted.
    aliased = AliasedStore(metered)
    quotas = app[QUOTAS]
    app[STORE] = CountingStore(aliased, quotas) if quotas.any else aliased
    # No compaction key in the policy file: one every replica on this store shares, made when first needed.
    app[CONTEXT].compaction.share_through(partial(app[STORE].shared_secret, "compaction"))
    try:
        async with reconciling(metered, quotas):
            if isinstance(store, MemoryStore):
                async with store.sweeping():
                    yield
            else:
                yield
    finally:
        await store.close()


async def _upstream_context(app: web.Application) -> AsyncIterator[None]:
    async for _ in upstream_context(app, app[CONFIG], UPSTREAM, app[METRICS]):
        yield


async def _summaries_context(app: web.Application) -> AsyncIterator[None]:
    yield
    # A block whose summary is cut off here is summarised again by the next turn that folds it.
    await app[CONTEXT].summary_writer.close()
