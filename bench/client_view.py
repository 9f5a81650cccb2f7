"""`python -m bench.client_view`: the concurrency-1 non-stream figure as different clients see it.

An acceptance-style run found the sidecar adding 1.85 ms over the engine (the pass-through 0.71),
where `python -m bench` said 0.90 (pass-through 0.38). This runs the engine, the pass-through and the sidecar
on a redis-server side by side and sends each the same chained 20-turn conversations (~200-byte inputs), one
request at a time, through several clients, interleaved request by request so that a busy neighbour hits every
cell alike:

- `bench-raw`: `bench/load.py`'s raw asyncio keep-alive connection (what `python -m bench` measures);
- `bench-raw+sleep` / `bench-raw+spin`: the same, then (untimed) 1.5 ms asleep / 1.5 ms of CPU spinning
  before the next request, as an application between calls;
- `httpx` / `httpx-sdk-headers`: the SDK's transport alone, without / with the headers the SDK adds;
- `openai-sdk`: the official `openai` client (httpx, keep-alive, the answer parsed into its models), what an
  application sees;
- `new-connection`: a plain `http.client` connection opened and closed for every request, as a client
  without a pool does.

It prints p50 per client and target, p50 added over the engine and the client's own CPU per request; the
finding is in bench/README.md ("What a client sees").
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson

from .load import Connection, input_text
from .processes import RedisServer, free_port, python_module, started
from .proxy_bench import ENGINE_DELTAS, sidecar
from .report import summarise, write_json
from .sweep import cpu_ns

RESULTS = Path(__file__).parent / "results"
TARGETS = ("direct", "passthrough", "sidecar-redis")
TURNS = 20
CLIENTS = (
    "bench-raw",
    "bench-raw+sleep",
    "bench-raw+spin",
    "httpx",
    "httpx-sdk-headers",
    "openai-sdk",
    "new-connection",
)

# What the openai SDK (3.x) sends besides the body.
SDK_HEADERS = {
    "Accept": "application/json",
    "Authorization": "Bearer bench",
    "User-Agent": "OpenAI/Python 3.57.0",
    "X-Stainless-Lang": "python",
    "X-Stainless-Package-Version": "3.57.0",
    "X-Stainless-OS": "Linux",
    "X-Stainless-Arch": "x64",
    "X-Stainless-Runtime": "CPython",
    "X-Stainless-Runtime-Version": "3.11.7",
    "X-Stainless-Async": "false",
    "X-Stainless-Retry-Count": "0",
    "X-Stainless-Read-Timeout": "600",
}

# One call: (url, request body) -> (answer's response id, the answer's size in bytes)
Call = Callable[[str, dict[str, Any]], tuple[str, int]]


class BenchRaw:
    """bench/load.py's client, driven one request at a time on its own event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.connections: dict[str, Connection] = {}

    def __call__(self, url: str, body: dict[str, Any]) -> tuple[str, int]:
        if url not in self.connections:
            host, port = url.removeprefix("http://").split(":")
            self.connections[url] = Connection(host, int(port))
        post = self.connections[url].post("/v1/responses", orjson.dumps(body))
        status, data, _ = self.loop.run_until_complete(post)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
        return str(orjson.loads(data)["id"]), len(data)

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


class OpenAISDK:
    """The official client, one per target (each keeps its own httpx pool), no retries."""

    def __init__(self) -> None:
        self.clients: dict[str, Any] = {}

    def __call__(self, url: str, body: dict[str, Any]) -> tuple[str, int]:
        import openai

        if url not in self.clients:
            self.clients[url] = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
        response = self.clients[url].responses.with_raw_response.create(**body)
        return str(response.parse().id), len(response.content)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


class HTTPX:
    """httpx, the SDK's transport, on its own: keep-alive, the answer decoded with orjson."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        import httpx

        self.client = httpx.Client(timeout=30)
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def __call__(self, url: str, body: dict[str, Any]) -> tuple[str, int]:
        answer = self.client.post(url + "/v1/responses", content=orjson.dumps(body), headers=self.headers)
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.content[:300]!r}")
        return str(orjson.loads(answer.content)["id"]), len(answer.content)

    def close(self) -> None:
        self.client.close()


class BusyBetween:
    """What a client does between requests (outside the timed part): spinning for `milliseconds` (CPU work,
    as an SDK's), with `sweep_bytes` also writing that much memory as its allocations do; or only sleeping."""

    def __init__(self, milliseconds: float, sweep_bytes: int = 0, *, sleep: bool = False) -> None:
        self.seconds = milliseconds / 1000
        self.sleep = sleep
        self.buffer = bytearray(sweep_bytes)
        self.zeros = bytes(len(self.buffer[::64]))

    def __call__(self) -> None:
        if self.sleep:
            time.sleep(self.seconds)
            return
        until = time.perf_counter() + self.seconds
        while time.perf_counter() < until:
            if self.buffer:
                self.buffer[::64] = self.zeros


def new_connection(url: str, body: dict[str, Any]) -> tuple[str, int]:
    """A connection per request, closed after it (no pool)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", "/v1/responses", orjson.dumps(body), {"Content-Type": "application/json"})
        answer = connection.getresponse()
        data = answer.read()
    finally:
        connection.close()
    if answer.status != 200:
        raise RuntimeError(f"HTTP {answer.status}: {data[:300]!r}")
    return str(orjson.loads(data)["id"]), len(data)


@contextmanager
def targets() -> Iterator[dict[str, tuple[str, int]]]:
    """The engine, the pass-through before it and the sidecar on a redis-server, all up at once: (url, pid)
    of the process whose CPU each target's row reports (the engine's for direct, the proxy's otherwise)."""
    with ExitStack() as stack:
        port = free_port()
        argv = python_module("bench.engine", "--port", str(port), "--deltas", str(ENGINE_DELTAS))
        engine = stack.enter_context(started("engine", argv, port))
        port = free_port()
        argv = python_module("bench.passthrough", "--port", str(port), "--upstream", engine.url)
        passthrough = stack.enter_context(started("passthrough", argv, port))
        redis = stack.enter_context(RedisServer())
        proxy = stack.enter_context(sidecar(engine.url, redis.url))
        yield {
            "direct": (engine.url, engine.pid),
            "passthrough": (passthrough.url, passthrough.pid),
            "sidecar-redis": (proxy.url, proxy.pid),
        }


def run(requests: int, out: Path, clients: tuple[str, ...]) -> dict[str, Any]:
    raw = BenchRaw()
    sdk = OpenAISDK()
    plain = HTTPX()
    sdk_headers = HTTPX(SDK_HEADERS)
    calls: dict[str, Call] = {
        "bench-raw": raw,
        "httpx": plain,
        "httpx-sdk-headers": sdk_headers,
        "openai-sdk": sdk,
        "new-connection": new_connection,
        "bench-raw+sleep": raw,
        "bench-raw+spin": raw,
        "bench-raw+sweep": raw,
    }
    between = {
        "bench-raw+sleep": BusyBetween(1.5, sleep=True),
        "bench-raw+spin": BusyBetween(1.5),
        "bench-raw+sweep": BusyBetween(1.5, 8 << 20),
    }
    chosen = {name: calls[name] for name in clients}
    rng = random.Random(1)
    cells = [(client, target) for client in chosen for target in TARGETS]
    latency: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    client_cpu: dict[tuple[str, str], float] = dict.fromkeys(cells, 0.0)
    server_cpu: dict[tuple[str, str], int] = dict.fromkeys(cells, 0)
    sizes: dict[tuple[str, str], int] = {}
    previous: dict[tuple[str, str], str | None] = dict.fromkeys(cells)
    try:
        with targets() as processes:
            for n in range(requests + requests // 10):  # the first tenth warms up, untimed
                text = input_text(rng, 200)
                for cell in cells:
                    client, target = cell
                    body: dict[str, Any] = {"model": "bench-model", "input": text}
                    if n % TURNS and previous[cell] is not None:
                        body["previous_response_id"] = previous[cell]
                    url, pid = processes[target]
                    served = cpu_ns(pid)
                    begun, cpu = time.perf_counter(), time.process_time()
                    previous[cell], sizes[cell] = chosen[client](url, body)
                    if n >= requests // 10:
                        latency[cell].append((time.perf_counter() - begun) * 1000)
                        client_cpu[cell] += time.process_time() - cpu
                        server_cpu[cell] += cpu_ns(pid) - served
                    if client in between:
                        between[client]()
    finally:
        raw.close()
        sdk.close()
        plain.close()
        sdk_headers.close()
    table: dict[str, dict[str, Any]] = {}
    for client in chosen:
        table[client] = {}
        direct = summarise(latency[(client, "direct")])["p50"]
        for target in TARGETS:
            stats = summarise(latency[(client, target)])
            table[client][target] = {
                **stats,
                "added_p50": stats["p50"] - direct,
                "answer_bytes": sizes[(client, target)],
                # the client's own CPU per request: work a client does on the answer, in its latency
                "client_cpu_us": client_cpu[(client, target)] / len(latency[(client, target)]) * 1e6,
                # the serving process's own CPU per request (the engine's for direct), from schedstat
                "server_cpu_us": server_cpu[(client, target)] / len(latency[(client, target)]) / 1000,
            }
    result = {"kind": "client_view", "requests_per_cell": requests, "results": table}
    write_json(out, result)
    return result


def print_table(result: dict[str, Any]) -> None:
    print("concurrency 1, non-stream: p50 ms (added over the engine), CPU µs per call: client / server")
    print(f"  {'client':18s} " + " ".join(f"{t:>30s}" for t in TARGETS))
    for client, row in result["results"].items():
        cells = [
            f"{row[t]['p50']:.3f} ({row[t]['added_p50']:+.3f}) "
            f"{row[t]['client_cpu_us']:4.0f}/{row[t]['server_cpu_us']:4.0f}"
            for t in TARGETS
        ]
        print(f"  {client:18s} " + " ".join(f"{c:>30s}" for c in cells))
    sizes = {t: row[t]["answer_bytes"] for t in TARGETS}
    print(f"  answer bytes: {sizes}")
    for client, row in result["results"].items():
        over_pt = row["sidecar-redis"]["added_p50"] - row["passthrough"]["added_p50"]
        print(f"  {client:18s} sidecar over the pass-through: {over_pt:+.3f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=600, help="timed requests per client and target")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated: " + ", ".join(CLIENTS))
    parser.add_argument("--out", type=Path, default=RESULTS / "client_view.json")
    args = parser.parse_args(argv)
    result = run(args.requests, args.out, tuple(args.clients.split(",")))
    print_table(result)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
