"""Prometheus metrics (docs/api.md §8): one registry per app, every name prefixed `convostore_`."""

from __future__ import annotations

import contextvars
import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)
BYTES_BUCKETS = (1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6, 16e6)
TOKEN_BUCKETS = (100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)

# When the current request's engine call started (perf_counter), for the overhead the sidecar adds before it.
upstream_started: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "upstream_started", default=None
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Under --workers N (sidecar/workers.py) every worker writes its values to files in this directory
        # and a scrape, answered by any one worker, reads all of them: the sums across workers. Gauges need
        # a `multiprocess_mode` there (e.g. "livesum"); the supervisor marks a dead worker's files.
        multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.exposition = self.registry
        if multiprocess_dir:
            self.exposition = CollectorRegistry()
            MultiProcessCollector(self.exposition, multiprocess_dir)  # type: ignore[no-untyped-call]
        r = self.registry
        self.requests = Counter(
            "convostore_requests", "Requests by route and status.", ["route", "status"], registry=r
        )
        self._requests_by_label: dict[tuple[str, int], Counter] = {}
        self.resolve_latency_ms = Histogram(
            "convostore_resolve_latency_ms",
            "Store round trip resolving a turn's history.",
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.append_conflicts = Counter(
            "convostore_append_conflicts", "Writes refused by If-Match (version conflicts).", registry=r
        )
        self.session_size_bytes = Histogram(
            "convostore_session_size_bytes",
            "Stored bytes of a conversation after a write.",
            buckets=BYTES_BUCKETS,
            registry=r,
        )
        self.estimated_input_tokens = Histogram(
            "convostore_estimated_input_tokens",
            "Estimated prompt tokens of the history sent to the engine.",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.upstream_first_byte_ms = Histogram(
            "convostore_upstream_first_byte_ms",
            "Engine time to response headers.",
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.proxy_overhead_ms = Histogram(
            "convostore_proxy_overhead_ms",
            "Time from a request's arrival to its engine call starting.",
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.prefix_reuse_ratio = Histogram(
            "convostore_prefix_reuse_ratio",
            "Engine-reported cached prompt tokens over prompt tokens.",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "convostore_store_errors", "Store calls that failed to reach the store.", registry=r
        )
        # Tenant ids are not labels (unbounded, and they say who the customers are): only whether the tenant
        # has limits of its own in the policy file ("listed") or the default ones.
        self.quota_rejections = Counter(
            "convostore_quota_rejections",
            "Requests refused by a tenant quota.",
            ["tenant_class", "kind"],
            registry=r,
        )
        # Background responses (sidecar/runs/): runs going on this replica, how they ended ("lost" to another
        # replica's reaper), follows of a run's event log by GET ?stream=true, runs a cancel stopped (on the
        # replica that ran them, or the reaper that settled them), orphans this replica's reaper settled.
        self.background_running = Gauge(
            "convostore_background_responses_running",
            "Background responses running on this replica.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.background_started = Counter(
            "convostore_background_responses_started", "Background responses started.", registry=r
        )
        self.background_finished = Counter(
            "convostore_background_responses_finished",
            "Background responses ended, by final status.",
            ["status"],
            registry=r,
        )
        self.background_resumed = Counter(
            "convostore_background_streams_resumed",
            "Background response streams resumed from the event log (GET ?stream=true).",
            registry=r,
        )
        self.background_cancels = Counter(
            "convostore_background_cancels", "Background responses stopped by a cancel.", registry=r
        )
        self.background_reaped = Counter(
            "convostore_background_reaped",
            "Background responses of a dead replica settled by this replica's reaper.",
            registry=r,
        )
        self.apc_fingerprint_changes = Counter(
            "convostore_apc_fingerprint_changes",
            "Turns whose prompt prefix fingerprint differs from the turn they continue.",
            registry=r,
        )
        self.summaries = Counter(
            "convostore_summaries", "Summary blocks folded, by summariser.", ["summariser"], registry=r
        )
        self.summary_latency_ms = Histogram(
            "convostore_summary_latency_ms",
            "Time to write the summary blocks of a turn that folded.",
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.summary_failures = Counter(
            "convostore_summary_failures",
            "Summaries the upstream or http summariser did not give (the template summary was stored).",
            ["summariser"],
            registry=r,
        )
        # WebSocket mode (handlers/ws_session.py). Message types are the client's, bounded: `response.create`,
        # `response.steer` or `other`; error messages by their HTTP status.
        self.websockets_open = Gauge(
            "convostore_websockets_open",
            "Responses WebSockets open.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.websocket_messages = Counter(
            "convostore_websocket_messages",
            "Client messages on Responses WebSockets, by type.",
            ["type"],
            registry=r,
        )
        self.websocket_errors = Counter(
            "convostore_websocket_errors",
            "Error messages sent on Responses WebSockets, by HTTP status.",
            ["status"],
            registry=r,
        )

    def count_request(self, route: str, status: int) -> None:
        """One answered request. Routes and statuses are few: each pair's labelled child is looked up once
        (`labels()` takes a lock and checks its arguments on every call, a few µs per request)."""
        child = self._requests_by_label.get((route, status))
        if child is None:
            child = self._requests_by_label[(route, status)] = self.requests.labels(route, str(status))
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.exposition)

    def observe_usage(self, usage: object) -> None:
        """Prefix-cache reuse from an answer's usage (Responses or chat shape), when the engine reports it."""
        if not isinstance(usage, dict):
            return
        prompt = usage.get("input_tokens") or usage.get("prompt_tokens")
        details = usage.get("input_tokens_details") or usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if isinstance(prompt, int) and prompt > 0 and isinstance(cached, int):
            self.prefix_reuse_ratio.observe(min(1.0, cached / prompt))


def mark_upstream_start() -> float:
    started = time.perf_counter()
    upstream_started.set(started)
    return started
