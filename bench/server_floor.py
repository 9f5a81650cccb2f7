"""`python -m bench.server_floor`: what aiohttp's server costs per request, against a bare httptools protocol.

The sidecar's CPU per request at concurrency 16 sets its throughput (one process saturates one core), and part
of it is aiohttp's server: parse, request object, middleware, response, keep-alive. This measures that part
alone. Three servers do the same trivial work (parse a ~300-byte JSON body, answer a fixed ~1 KB JSON):
- `aiohttp-app`: a `web.Application` with one middleware, as the sidecar is built;
- `aiohttp-lowlevel`: aiohttp's low-level `web.Server`, no router or middleware;
- `httptools`: an asyncio protocol on httptools answering from a task (as a handler that awaits I/O would),
  one `write` per answer: the floor any hand-written server could reach.
Each is driven by `bench/load.py`'s raw keep-alive client at concurrency 1 and 16, the kinds taking turns for
`--rounds` rounds; CPU per request is the server's own (/proc/PID/schedstat), the median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from .load import Connection
from .processes import free_port, python_module, started
from .report import write_json
from .sweep import cpu_ns

RESULTS = Path(__file__).parent / "results"
KINDS = ("aiohttp-app", "aiohttp-lowlevel", "httptools")
BODY = orjson.dumps({"model": "m", "input": "y" * 200, "previous_response_id": "resp_abc", "store": True})
ANSWER = orjson.dumps(
    {"id": "resp_x", "object": "response", "output": [{"type": "output_text", "text": "x" * 900}]}
)


def _work(raw: bytes) -> bytes:
    orjson.loads(raw)
    return ANSWER


async def _aiohttp_app(port: int) -> None:
    from aiohttp import web

    @web.middleware
    async def passing(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        return await handler(request)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=_work(await request.read()), content_type="application/json")

    app = web.Application(middlewares=[passing])
    app.router.add_post("/v1/responses", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def _aiohttp_lowlevel(port: int) -> None:
    from aiohttp import web

    async def answer(request: web.BaseRequest) -> web.Response:
        return web.Response(body=_work(await request.read()), content_type="application/json")

    await asyncio.get_running_loop().create_server(web.Server(answer, access_log=None), "127.0.0.1", port)
    await asyncio.Event().wait()


class _HttptoolsProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1 with Content-Length bodies: enough for this load, not a server."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.WriteTransport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self._answer(b"".join(self.body)))

    async def _answer(self, raw: bytes) -> None:
        out = _work(raw)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(out)
        self.transport.write(head + out)


async def _httptools(port: int) -> None:
    await asyncio.get_running_loop().create_server(_HttptoolsProtocol, "127.0.0.1", port)
    await asyncio.Event().wait()


SERVERS = {"aiohttp-app": _aiohttp_app, "aiohttp-lowlevel": _aiohttp_lowlevel, "httptools": _httptools}


async def _load(port: int, concurrency: int, requests: int) -> float:
    """Requests per second of `requests` POSTs from `concurrency` keep-alive connections."""
    sent = 0

    async def worker() -> None:
        nonlocal sent
        connection = Connection("127.0.0.1", port)
        try:
            while sent < requests:
                sent += 1
                status, _, _ = await connection.post("/v1/responses", BODY)
                if status != 200:
                    raise RuntimeError(f"status {status}")
        finally:
            connection.close()

    started_at = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started_at)


def measure(kind: str, concurrency: int, requests: int) -> tuple[float, float]:
    """(rps, server CPU µs per request) of one run against a fresh server of `kind`."""
    port = free_port()
    with started(kind, python_module("bench.server_floor", "serve", kind, str(port)), port) as server:
        asyncio.run(_load(port, concurrency, min(requests, 1000)))  # warm up
        before = cpu_ns(server.pid)
        rps = asyncio.run(_load(port, concurrency, requests))
        return rps, (cpu_ns(server.pid) - before) / requests / 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="(internal) run one server")
    serve.add_argument("kind", choices=KINDS)
    serve.add_argument("port", type=int)
    parser.add_argument("--requests", type=int, default=10_000, help="per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 requests, one round")
    parser.add_argument("--out", type=Path, default=RESULTS / "server_floor.json")
    args = parser.parse_args(argv)
    if args.command == "serve":
        import uvloop

        uvloop.run(SERVERS[args.kind](args.port))
        return
    if args.quick:
        args.requests, args.rounds = 300, 1
    cpu: dict[tuple[str, int], list[float]] = {}
    rps: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for concurrency in (1, 16):
            for kind in KINDS:
                got_rps, got_cpu = measure(kind, concurrency, args.requests)
                rps.setdefault((kind, concurrency), []).append(got_rps)
                cpu.setdefault((kind, concurrency), []).append(got_cpu)
    rows: list[dict[str, object]] = []
    print("| server | concurrency | rps | CPU µs/req | over httptools |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for concurrency in (1, 16):
        floor = statistics.median(cpu[("httptools", concurrency)])
        for kind in KINDS:
            us, per_second = (
                statistics.median(cpu[(kind, concurrency)]),
                statistics.median(rps[(kind, concurrency)]),
            )
            print(f"| {kind} | {concurrency} | {per_second:,.0f} | {us:,.0f} | +{us - floor:,.0f} |")
            rows.append({"server": kind, "concurrency": concurrency, "rps": per_second,
                         "cpu_us_per_request": us, "over_httptools_us": us - floor})  # fmt: skip
    write_json(args.out, {"kind": "server_floor", "quick": args.quick, "requests": args.requests,
                          "rounds": args.rounds, "rows": rows})  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
