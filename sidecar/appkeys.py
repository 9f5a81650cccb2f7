"""Typed application keys: the process-wide objects handlers share (no globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .auth import Authenticator
    from .config import Config
    from .context.window import ContextWindow
    from .metrics import Metrics
    from .passthrough_routes import PassthroughRoutes
    from .store import Store
    from .upstream import Upstream

CONFIG: web.AppKey[Config] = web.AppKey("config")
STORE: web.AppKey[Store] = web.AppKey("store")
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
UPSTREAM: web.AppKey[Upstream] = web.AppKey("upstream")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
CONTEXT: web.AppKey[ContextWindow] = web.AppKey("context")
PASSTHROUGH_ROUTES: web.AppKey[PassthroughRoutes] = web.AppKey("passthrough_routes")
