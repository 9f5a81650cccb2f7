"""The engine client: the hot path's lean keep-alive client (engine_client.py) or, for an engine it cannot
reach, one aiohttp ClientSession per process, which also serves pass-through and the probes."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import aiohttp
import orjson
from aiohttp import web

from .config import Config
from .engine_client import EngineClient
from .errors import UpstreamError, UpstreamTimeout
from .metrics import Metrics, mark_upstream_start
from .redact import mask_userinfo
from .tracing import current_trace, current_tracer

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


def failure_reason(exc: BaseException) -> str:
    """What went wrong between the sidecar and the engine, in words a client's log can use ("connection
    refused", not "ClientOSError"); never the engine's address, which is the deployment's own."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the engine closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the engine's answer was cut off or malformed"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return os.strerror(exc.errno).lower()
    return exc.__class__.__name__


class AnswerBody(Protocol):
    """What the relays read of an answer's body (engine_response.EngineBody or aiohttp's StreamReader)."""

    def iter_any(self) -> AsyncIterator[bytes]: ...

    def set_exception(self, exc: BaseException) -> None: ...


class EngineAnswer(Protocol):
    """What the relays use of an engine's answer: the lean client's EngineResponse or aiohttp's."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content_type(self) -> str: ...

    @property
    def content(self) -> AnswerBody: ...

    async def read(self) -> bytes: ...

    def release(self) -> Any: ...

    def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any: ...


class Upstream:
    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        metrics: Metrics | None = None,
        *,
        lean: bool = True,
    ) -> None:
        self.metrics = metrics
        self.base_url = config.upstream
        self.session = session
        self.api_key = config.upstream_api_key
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=10.0, sock_read=config.upstream_timeout_seconds
        )
        # The hot path's POSTs; None (an https engine, credentials in the URL, or `lean=False`): the session.
        self.engine = (
            EngineClient.for_url(
                self.base_url, connect_timeout=self.timeout.sock_connect, read_timeout=self.timeout.sock_read
            )
            if lean
            else None
        )
        self.api = config.upstream_api  # resolved from "auto" by probe_api()

    def url(self, path: str) -> str:
        return self.base_url + path

    def headers(self, client_headers: Mapping[str, str], *, forward_client_key: bool) -> dict[str, str]:
        """Engine request headers: our key when configured, else the client's when it may pass."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        elif forward_client_key and "Authorization" in client_headers:
            headers["Authorization"] = client_headers["Authorization"]
        trace = current_trace()
        if trace is not None:  # the request's trace: the client's, or one minted for it
            headers.update(trace.engine_headers())
        elif "traceparent" in client_headers:
            headers["traceparent"] = client_headers["traceparent"]
        return headers

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> EngineAnswer:
        """Send a request; the caller reads (and releases) the answer. Transport failures become the
        OpenAI errors of docs/api.md §4: 502 unreachable, 504 timed out."""
        tracer = current_tracer()
        if tracer is None:
            return await self._post(path, body, headers)
        return await self._post_traced(tracer, path, body, headers)

    async def _post_traced(
        self, tracer: Tracer, path: str, body: bytes, headers: dict[str, str]
    ) -> EngineAnswer:
        """The engine call in a client span, whose context the engine receives. The span ends with the
        answer's headers (time to first byte); a stream's body is the server span's."""
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        url = mask_userinfo(self.url(path))
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "url.full": url,
            "http.request.body.size": len(body),
        }
        with tracer.start_as_current_span(
            f"engine POST {path}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            headers = dict(headers)
            propagate.inject(headers)
            response = await self._post(path, body, headers)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> EngineAnswer:
        started = mark_upstream_start()
        try:
            response: EngineAnswer
            if self.engine is not None:
                response = await self.engine.post(path, body, headers)
            else:
                response = await self.session.post(
                    self.url(path), data=body, headers=headers, timeout=self.timeout
                )
        except TimeoutError:
            raise UpstreamTimeout("The engine did not answer in time.") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"The engine is unreachable: {failure_reason(exc)}.") from None
        if self.metrics is not None:
            self.metrics.upstream_first_byte_ms.observe((time.perf_counter() - started) * 1000)
        return response

    async def ask(self, path: str, body: dict[str, Any], timeout: aiohttp.ClientTimeout) -> Any:
        """A JSON question to one of the engine's own endpoints (/tokenize, /apply-template), with the
        sidecar's key if any: its answer, or None when the engine does not answer it (absent, down, an
        error status, not JSON) — these only ever refine an estimate."""
        try:
            async with self.session.post(
                self.url(path),
                data=orjson.dumps(body),
                headers=self.headers({}, forward_client_key=False),
                timeout=timeout,
            ) as resp:
                return await resp.json(loads=orjson.loads, content_type=None) if resp.ok else None
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
            return None

    async def ensure_api(self) -> str:
        return self.api if self.api != "auto" else await self.probe_api()

    async def reachable(self) -> str | None:
        """None when the engine answers; else the reason it does not."""
        for path in ("/health", "/v1/models"):
            try:
                async with self.session.get(self.url(path), timeout=PROBE_TIMEOUT) as resp:
                    if resp.status < 500:
                        return None
            except (TimeoutError, aiohttp.ClientError) as exc:
                reason = f"engine unreachable at {self.base_url}: {failure_reason(exc)}"
                continue
            reason = f"engine at {self.base_url} answered {resp.status}"
        return reason

    async def probe_api(self) -> str:
        """Which API the engine speaks: a Responses engine rejects an empty body with 4xx, not 404."""
        if self.api != "auto":
            return self.api
        try:
            async with self.session.post(self.url("/v1/responses"), json={}, timeout=PROBE_TIMEOUT) as resp:
                self.api = "chat" if resp.status in (404, 405) else "responses"
        except (TimeoutError, aiohttp.ClientError):
            return "auto"  # engine not up yet: probe again on first use
        return self.api


def client_session(config: Config) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=512, keepalive_timeout=60, ttl_dns_cache=300)
    # A proxy keeps no cookies of the engine's: DummyCookieJar skips cookie handling on every request.
    # Bodies are never decompressed here (pass-through relays the engine's encoding as it is), so aiohttp's
    # default Accept-Encoding must not ask for one: a compressing engine would answer the stateful routes
    # with gzip they parse as JSON, and a pass-through client that asked for none with gzip it cannot read.
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def upstream_context(
    app: web.Application, config: Config, key: web.AppKey[Upstream], metrics: Metrics
) -> AsyncIterator[None]:
    session = client_session(config)
    upstream = Upstream(config, session, metrics)
    app[key] = upstream
    await upstream.probe_api()
    try:
        yield
    finally:
        if upstream.engine is not None:
            await upstream.engine.close()
        await session.close()
