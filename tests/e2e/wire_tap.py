"""An openai SDK client that keeps the raw bytes of every answer, so tests check the wire, not the SDK's
models (which coerce: `created_at` becomes a float, absent fields become None)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
from openai import OpenAI

JSONObject = dict[str, Any]


class _TeeStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._sink += chunk
            yield chunk

    def close(self) -> None:
        self._inner.close()


class WireTap(httpx.BaseTransport):
    """An httpx2 transport (the SDK's HTTP stack) recording each answer's body as the SDK reads it."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.bodies: list[bytearray] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        sink = bytearray()
        self.bodies.append(sink)
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_TeeStream(response.stream, sink),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self._inner.close()

    def last_json(self) -> Any:
        return orjson.loads(bytes(self.bodies[-1]))

    def last_events(self) -> list[JSONObject]:
        """The JSON of every `data:` line of the last answer (a finished SSE stream), in order."""
        return list(_sse_data(bytes(self.bodies[-1])))

    def response_resource(self, response_id: str) -> JSONObject:
        """The latest raw response object with this id: a JSON body, or a streamed event's `response`."""
        for body in reversed(self.bodies):
            for candidate in reversed(list(_resources(bytes(body)))):
                if candidate.get("id") == response_id:
                    return candidate
        raise AssertionError(f"no response object {response_id!r} went over the wire")


def _sse_data(body: bytes) -> Iterator[JSONObject]:
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
        if data and data != b"[DONE]":
            yield orjson.loads(data)


def _resources(body: bytes) -> Iterator[JSONObject]:
    try:
        whole = orjson.loads(body)
    except orjson.JSONDecodeError:
        for event in _sse_data(body):
            if isinstance(event.get("response"), dict):
                yield event["response"]
        return
    if isinstance(whole, dict) and whole.get("object") == "response":
        yield whole


class TappedOpenAI(OpenAI):
    """`OpenAI` with `.tap`, the raw answers it received."""

    def __init__(self, *, base_url: str) -> None:
        self.tap = WireTap()
        # No retries: a retried POST would hide a failure and could store a turn twice.
        super().__init__(
            base_url=base_url,
            api_key="x",
            max_retries=0,
            timeout=120.0,
            http_client=httpx.Client(transport=self.tap, timeout=120.0),
        )
