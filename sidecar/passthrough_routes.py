"""Which of the engine's own routes the pass-through forwards (docs/api.md §9, `passthrough`).

A transparent proxy (`CONVOSTORE_AUTH=none`) forwards every route. Once the sidecar authenticates tenants, an
engine's operator routes are not a tenant's to call: vLLM's /reset_prefix_cache, /sleep or LoRA loading,
llama-server's /slots (which saves and erases KV caches) or POST /props. So by default only the inference and
information routes of vLLM, llama-server and TGI pass; the policy file can widen or narrow that list.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# "METHOD /path", the path an fnmatch pattern; a GET route answers HEAD too.
INFERENCE_ROUTES = (
    # OpenAI-compatible (vLLM, llama-server, TGI's /v1)
    "GET /v1/models",
    "GET /v1/models/*",
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/embeddings",
    "POST /v1/audio/transcriptions",
    "POST /v1/audio/translations",
    "POST /v1/audio/speech",
    "POST /v1/rerank",
    "POST /v2/rerank",
    "POST /v1/score",
    # vLLM's own
    "POST /rerank",
    "POST /score",
    "POST /pooling",
    "POST /classify",
    "POST /tokenize",
    "POST /detokenize",
    "GET /health",
    "GET /ping",
    "GET /version",
    # llama-server's own
    "POST /completion",
    "POST /completions",
    "POST /embedding",
    "POST /embeddings",
    "POST /infill",
    "POST /reranking",
    "POST /apply-template",
    "GET /props",
    "GET /models",
    # TGI's own
    "POST /generate",
    "POST /generate_stream",
    "GET /info",
)
ALL = "all"
INFERENCE = "inference"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "*")


@dataclass(frozen=True)
class PassthroughRoutes:
    """The routes the pass-through forwards; `routes` None means every one."""

    routes: tuple[tuple[str, str], ...] | None

    def allows(self, method: str, path: str) -> bool:
        if self.routes is None:
            return True
        method = "GET" if method == "HEAD" else method
        return any(
            verb in ("*", method) and fnmatch.fnmatchcase(path, pattern) for verb, pattern in self.routes
        )


def passthrough_routes(setting: Any, auth: str) -> PassthroughRoutes:
    """From the policy file's `passthrough` (checked by policy.py): "all", "inference", or a list of routes
    and "inference". Unset: all of them without authentication, the inference routes with it."""
    if setting is None:
        setting = ALL if auth == "none" else INFERENCE
    if setting == ALL:
        return PassthroughRoutes(None)
    entries: Iterable[str] = [setting] if isinstance(setting, str) else setting
    routes: list[tuple[str, str]] = []
    for entry in entries:
        for route in INFERENCE_ROUTES if entry == INFERENCE else [entry]:
            method, _, path = route.partition(" ")
            routes.append((method.upper(), path))
    return PassthroughRoutes(tuple(routes))


def route_problem(entry: Any) -> str | None:
    """Why a `passthrough` list entry is not a route (None: it is one)."""
    if entry == INFERENCE:
        return None
    if not isinstance(entry, str):
        return f"expected a string like 'POST /v1/completions' or '{INFERENCE}'"
    method, _, path = entry.partition(" ")
    if method.upper() not in METHODS:
        return f"{entry!r}: the method must be one of {', '.join(METHODS)}"
    if not path.startswith("/") or " " in path:
        return f"{entry!r}: expected 'METHOD /path' (the path may hold * wildcards)"
    return None
