"""Closed-loop load: N workers, each running 20-turn conversations chained by `previous_response_id`.

    python -m bench.load --url http://127.0.0.1:PORT --concurrency 16 [--stream] --requests 4000 --seconds 10

Runs in its own process on a raw asyncio HTTP/1.1 keep-alive client (one connection per worker), cheap enough
that on 2 cores the generator is not what is measured; `--client openai` uses the official SDK instead
(non-stream only), to time what an application sees. Writes one JSON object (to --out, or stdout):
latencies in ms of every timed request (non-stream: full response; stream: time to the first body byte,
and to the end).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

_WORDS = (
    "state",
    "history",
    "redis",
    "engine",
    "token",
    "stream",
    "turn",
    "model",
    "cache",
    "prompt",
    "latency",
    "sidecar",
    "cluster",
    "answer",
    "question",
    "chain",
    "branch",
    "memory",
)


def input_text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


class HTTPError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads Content-Length or chunked answers."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, float]:
        """(status, body, seconds from send to the first body byte)."""
        reader, writer = await self._connect()
        start = time.perf_counter()
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), self.port, len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get(b"connection", b"").lower() != b"close"
        if b"content-length" in headers:
            data = await reader.readexactly(int(headers[b"content-length"]))
            first = time.perf_counter() - start
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts: list[bytes] = []
            first = 0.0
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers expected: the final CRLF
                    break
                chunk = await reader.readexactly(size + 2)
                if not first:
                    first = time.perf_counter() - start
                parts.append(chunk[:-2])
            data = b"".join(parts)
        else:
            data = await reader.read()
            first = time.perf_counter() - start
            keep = False
        if not keep:
            self.close()
        return status, data, first


class SDKConnection:
    """The official `openai` client (httpx keep-alive, each answer parsed into its models), timed from the
    call to the parsed response: what an application sees, its own CPU per call included (a
    client that works between requests finds the sidecar slower than the raw client does)."""

    def __init__(self, host: str, port: int) -> None:
        import openai

        self.client = openai.AsyncOpenAI(
            base_url=f"http://{host}:{port}/v1", api_key="bench", max_retries=0, timeout=30.0
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, float]:
        if path != "/v1/responses":
            raise ValueError(f"the SDK client only creates responses, not {path}")
        request = orjson.loads(body)
        if request.get("stream"):
            raise ValueError("the SDK client is timed on non-stream calls only")
        import openai

        start = time.perf_counter()
        try:
            answer = await self.client.responses.with_raw_response.create(**request)
        except openai.APIStatusError as exc:  # counted as the raw client counts it: an error, chain broken
            return exc.status_code, exc.response.content, time.perf_counter() - start
        except openai.APIConnectionError as exc:
            raise OSError(str(exc)) from None
        answer.parse()
        return answer.http_response.status_code, answer.http_response.content, time.perf_counter() - start

    def close(self) -> None:
        pass  # the pool is closed with the loop; nothing to reconnect after an error


def response_id(body: bytes, stream: bool) -> str:
    """The new response's id: the body's `id`, or for a stream the id in its `response.completed` event."""
    if not stream:
        return str(orjson.loads(body)["id"])
    marker = body.rfind(b'"response.completed"')
    if marker < 0:
        raise HTTPError("stream ended without response.completed")
    start = body.rfind(b"data: ", 0, marker) + len(b"data: ")
    end = body.find(b"\n", marker)
    return str(orjson.loads(body[start : end if end >= 0 else None])["response"]["id"])


@dataclass
class Results:
    latency_ms: list[float] = field(default_factory=list)  # full response (non-stream) or to the first byte
    total_ms: list[float] = field(default_factory=list)  # to the end of the body
    errors: int = 0
    first_error: str = ""
    sent: int = 0  # every request sent, warm-up included (for per-request store call counts)
    chained: int = 0  # of those, how many named a previous_response_id
    timed_s: float = 0.0


async def worker(
    conn: Connection | SDKConnection,
    args: argparse.Namespace,
    rng: random.Random,
    results: Results,
    budget: dict[str, Any],
) -> None:
    while True:
        previous: str | None = None
        for _ in range(args.turns):
            if budget["left"] <= 0 or time.perf_counter() > budget["deadline"]:
                return
            budget["left"] -= 1
            request: dict[str, Any] = {
                "model": "bench-model",
                "input": input_text(rng, args.input_bytes),
                "stream": args.stream,
            }
            if previous is not None:
                request["previous_response_id"] = previous
            results.sent += 1
            results.chained += previous is not None
            started = time.perf_counter()
            try:
                status, body, first = await conn.post("/v1/responses", orjson.dumps(request))
                if status != 200:
                    raise HTTPError(f"HTTP {status}: {body[:300]!r}")
                previous = response_id(body, args.stream)
            except (HTTPError, OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                results.errors += 1
                results.first_error = results.first_error or f"{exc.__class__.__name__}: {exc}"
                conn.close()
                break  # a broken chain starts a new conversation
            if budget["timing"]:
                results.latency_ms.append(first * 1000)
                results.total_ms.append((time.perf_counter() - started) * 1000)


async def run(args: argparse.Namespace) -> Results:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    kind = SDKConnection if args.client == "openai" else Connection
    conns = [kind(host, port) for _ in range(args.concurrency)]
    rngs = [random.Random(args.seed * 1000 + n) for n in range(args.concurrency)]
    try:
        # Warm-up: every connection opened, every code path hot; nothing recorded.
        warm = Results()
        budget = {"left": args.warmup, "deadline": time.perf_counter() + 30, "timing": False}
        await asyncio.gather(*(worker(c, args, r, warm, budget) for c, r in zip(conns, rngs, strict=True)))
        results = Results(
            errors=warm.errors, first_error=warm.first_error, sent=warm.sent, chained=warm.chained
        )
        started = time.perf_counter()
        budget = {"left": args.requests, "deadline": started + args.seconds, "timing": True}
        await asyncio.gather(*(worker(c, args, r, results, budget) for c, r in zip(conns, rngs, strict=True)))
        results.timed_s = time.perf_counter() - started
        return results
    finally:
        for conn in conns:
            conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--turns", type=int, default=20, help="turns per chained conversation")
    parser.add_argument("--input-bytes", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000, help="timed requests at most")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds at most")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--client", choices=("raw", "openai"), default="raw", help="raw asyncio HTTP/1.1, or the openai SDK"
    )
    parser.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    import uvloop

    results = uvloop.run(run(args))
    data = orjson.dumps(results.__dict__) + b"\n"
    if args.out is not None:
        args.out.write_bytes(data)  # a pipe may be left non-blocking by the loop: a file is never short
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main()
