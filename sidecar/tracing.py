"""W3C trace context on every request, and OpenTelemetry spans when the optional SDK is installed and on.

Every request gets a trace: the client's `traceparent` (and `tracestate`) when valid, else a minted one. Its
trace id goes in the log lines and the engine receives a `traceparent` in the same trace. Spans are exported
only when OpenTelemetry is switched on (`CONVOSTORE_TRACING`, below) and `opentelemetry-sdk` is installed
(`pip install convostore[otel]`): a server span per request, child spans for the store calls (MeteredStore)
and the engine call (Upstream.post). Off, no OpenTelemetry module is imported and no span object is created:
the store and engine paths pay one ContextVar lookup.

`CONVOSTORE_TRACING`: `auto` (default) exports when any of `OTEL_TRACES_EXPORTER` (other than `none`),
`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_SERVICE_NAME` is set and the SDK
is importable; `otel` always exports (start-up fails without the SDK); `off` never does. Everything else
(exporter, endpoint, protocol, headers, sampler, resource) is the SDK's own `OTEL_*` configuration. A
TracerProvider already installed globally (e.g. by `opentelemetry-instrument`) is used as it is.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.metadata
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from .config import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TRACING_MODES = ("auto", "otel", "off")
INSTRUMENTATION_NAME = "convostore"
_OTEL_SWITCHES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME")
# version-traceid-parentid-flags; a future version may append fields after a dash (W3C Trace Context §3.2.4).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_MAX_TRACESTATE = 512  # W3C: vendors MUST propagate at least 512 characters; longer ones we drop

log = logging.getLogger("convostore")


@dataclass(slots=True)
class RequestTrace:
    """The trace one request belongs to; `span_id` is the sidecar's (or, passing through, the client's)."""

    trace_id: str
    span_id: str
    flags: str
    tracestate: str | None
    tracer: Tracer | None = None  # set only while spans are exported

    def engine_headers(self) -> dict[str, str]:
        headers = {"traceparent": f"00-{self.trace_id}-{self.span_id}-{self.flags}"}
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers


class _UnreadTrace:
    """Spans off: the request's headers, read into its trace only when a log line or the engine call first
    asks (healthz and the session API never do). Shared, not copied, by tasks the request starts, so every
    reader sees the one trace."""

    __slots__ = ("headers", "trace")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers
        self.trace: RequestTrace | None = None

    def read(self) -> RequestTrace:
        if self.trace is None:
            self.trace = incoming_trace(self.headers)
        return self.trace


_CURRENT: contextvars.ContextVar[RequestTrace | _UnreadTrace | None] = contextvars.ContextVar(
    "convostore_trace", default=None
)


def open_request_trace(
    headers: Mapping[str, str],
) -> contextvars.Token[RequestTrace | _UnreadTrace | None] | None:
    """Spans off (no span middleware ran): the request's trace, read from `headers` when first asked for.
    Called by request_context, which resets the token when the request ends; None when a span is open."""
    if _CURRENT.get() is not None:
        return None
    return _CURRENT.set(_UnreadTrace(headers))


def close_request_trace(token: contextvars.Token[RequestTrace | _UnreadTrace | None] | None) -> None:
    if token is not None:
        _CURRENT.reset(token)


def current_trace() -> RequestTrace | None:
    trace = _CURRENT.get()
    return trace.read() if isinstance(trace, _UnreadTrace) else trace


def current_trace_id() -> str | None:
    trace = current_trace()
    return trace.trace_id if trace is not None else None


def current_tracer() -> Tracer | None:
    """The tracer while a request is traced and spans are exported; None otherwise (create no span)."""
    trace = _CURRENT.get()
    return trace.tracer if isinstance(trace, RequestTrace) else None


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid W3C traceparent, else None."""
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


def incoming_trace(headers: Mapping[str, str]) -> RequestTrace:
    """The client's trace when its traceparent is valid (tracestate kept), else a new sampled one: the
    engine, when it traces, then records under the id the sidecar logged."""
    parsed = parse_traceparent(headers.get("traceparent"))
    if parsed is None:  # W3C: without a valid traceparent, tracestate is not even read
        ids = os.urandom(24).hex()  # one system call for both ids
        return RequestTrace(ids[:32], ids[32:], "01", None)
    tracestate = headers.get("tracestate")
    if tracestate is not None and (len(tracestate) > _MAX_TRACESTATE or not tracestate.strip()):
        tracestate = None
    return RequestTrace(*parsed, tracestate)


class Tracing:
    """Whether this app exports spans; the tracer exists between start-up and cleanup."""

    def __init__(self, exporters: tuple[str, ...] | None) -> None:
        self.exporters = exporters  # None: tracing off; names of `opentelemetry_traces_exporter` entry points
        self.tracer: Tracer | None = None
        self._provider: TracerProvider | None = None  # only one we built is ours to shut down

    @property
    def enabled(self) -> bool:
        return self.exporters is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tracing:
        env = os.environ if env is None else env
        mode = (env.get("CONVOSTORE_TRACING") or "auto").strip().lower()
        if mode not in TRACING_MODES:
            raise ConfigError(f"CONVOSTORE_TRACING={mode!r}: expected one of {', '.join(TRACING_MODES)}")
        exporter_setting = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        wanted = exporter_setting not in ("", "none") or any(env.get(name) for name in _OTEL_SWITCHES)
        if mode == "off" or (mode == "auto" and not wanted) or _truthy(env.get("OTEL_SDK_DISABLED")):
            return cls(None)
        try:
            import opentelemetry.sdk.trace  # noqa: F401
        except ImportError:
            if mode == "otel":
                raise ConfigError(
                    "CONVOSTORE_TRACING=otel needs the OpenTelemetry SDK: pip install 'convostore[otel]'"
                ) from None
            log.warning("OTEL_* is set but opentelemetry-sdk is not installed: no spans are exported")
            return cls(None)
        if _installed_provider() is not None:
            return cls(())  # someone else's provider: its exporters are configured already
        return cls(_exporter_names(exporter_setting, env))

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: build the provider in the serving process, flush and shut it down on exit."""
        if self.enabled:
            self.tracer = self._start()
        try:
            yield
        finally:
            self.tracer = None
            if self._provider is not None:
                # The batch processor's last export may wait on the collector: not on the event loop.
                await asyncio.to_thread(self._provider.shutdown)
                self._provider = None

    def _start(self) -> Tracer:
        installed = _installed_provider()
        if installed is not None:
            return installed.get_tracer(INSTRUMENTATION_NAME)
        self._provider = build_provider(self.exporters or ())
        return self._provider.get_tracer(INSTRUMENTATION_NAME)

    def middleware(self) -> Middleware:
        """The outermost middleware when spans are exported (`enabled`): the server span every other span
        of the request descends from, its trace in a ContextVar (for logs, the engine's headers and the
        spans). Off, it is not installed: request_context opens the request's trace (open_request_trace)."""

        @web.middleware
        async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            tracer = self.tracer
            if tracer is None:
                token = _CURRENT.set(_UnreadTrace(request.headers))
                try:
                    return await handler(request)
                finally:
                    _CURRENT.reset(token)
            return await _serve_traced(tracer, request, handler)

        return trace_request


async def _serve_traced(tracer: Tracer, request: web.Request, handler: Handler) -> web.StreamResponse:
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind, Status, StatusCode

    route = _route(request)
    parent = propagate.extract(request.headers)  # an invalid traceparent extracts to nothing: a new root
    attributes = {"http.request.method": request.method, "url.path": request.path}
    if route:
        attributes["http.route"] = route
    with tracer.start_as_current_span(
        f"{request.method} {route}" if route else request.method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        context = span.get_span_context()
        tracestate = context.trace_state.to_header() or None
        trace = RequestTrace(
            format(context.trace_id, "032x"),
            format(context.span_id, "016x"),
            format(context.trace_flags, "02x"),
            tracestate,
            tracer,
        )
        token = _CURRENT.set(trace)
        try:
            response = await handler(request)
        finally:
            _CURRENT.reset(token)
        _describe_response(span, response)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response


def _describe_response(span: Span, response: web.StreamResponse) -> None:
    span.set_attribute("http.response.status_code", response.status)
    for header, attribute in (
        ("X-Request-Id", "convostore.request_id"),
        ("X-Response-Id", "convostore.response_id"),
        ("X-Conversation-Id", "convostore.conversation_id"),
    ):
        value = response.headers.get(header)
        if value is not None:
            span.set_attribute(attribute, value)


def _route(request: web.Request) -> str:
    """The matched route's pattern (bounded cardinality); empty for the engine's pass-through routes."""
    resource = request.match_info.route.resource
    pattern = resource.canonical if resource is not None else ""
    return "" if pattern == "/{tail}" else pattern


async def traced(tracer: Tracer, name: str, call: Awaitable[T], attributes: Mapping[str, str]) -> T:
    """Await `call` inside a client span (store calls); an exception is recorded on the span."""
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=dict(attributes)):
        return await call


def _installed_provider() -> TracerProvider | None:
    """The global provider when it is an SDK one (installed by opentelemetry-instrument or the embedder)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    installed = trace.get_tracer_provider()
    return installed if isinstance(installed, TracerProvider) else None


def build_provider(exporter_names: tuple[str, ...]) -> TracerProvider:
    """A TracerProvider configured like the SDK's own auto-configuration: resource from OTEL_SERVICE_NAME /
    OTEL_RESOURCE_ATTRIBUTES (service name `convostore` unless set), sampler from OTEL_TRACES_SAMPLER, one
    batch processor per exporter (each reads its own OTEL_EXPORTER_* variables)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "convostore"}))
    provider = TracerProvider(resource=resource)
    for name in exporter_names:
        provider.add_span_processor(BatchSpanProcessor(_load_exporter(name)()))
    return provider


def _exporter_names(setting: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """OTEL_TRACES_EXPORTER (default otlp) as entry point names; `otlp` picks its protocol's exporter."""
    names = []
    for raw in (setting or "otlp").split(","):
        name = raw.strip()
        if not name or name == "none":
            continue
        if name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            name = "otlp_proto_http" if (protocol or "").strip() == "http/protobuf" else "otlp_proto_grpc"
        if not importlib.metadata.entry_points(group="opentelemetry_traces_exporter", name=name):
            hint = " (pip install 'convostore[otel]')" if name.startswith("otlp") else ""
            raise ConfigError(f"OTEL_TRACES_EXPORTER: no span exporter named {raw.strip()!r} installed{hint}")
        names.append(name)
    return tuple(names)


def _load_exporter(name: str) -> Callable[[], SpanExporter]:
    (entry_point,) = importlib.metadata.entry_points(group="opentelemetry_traces_exporter", name=name)
    exporter: Callable[[], SpanExporter] = entry_point.load()
    return exporter


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
