"""`python -m bench soak`: the sidecar on its own redis-server under long, bounded, mixed load; RSS, open file
descriptors, Redis connections and event-loop lag before, at the start (after warm-up), at the end and after.

    python -m bench soak [--requests 200000] [--seconds S] [--concurrency 32] [--quick]

Load runs in its own process (`--load`, below): each worker chains 20-turn conversations by
`previous_response_id`, each turn streamed or not at random, and every `--disconnect-every`-th request is a
stream the client drops after its first chunk (the chain then starts over). Event-loop lag is measured from
outside: the latency of `GET /convostore/healthz`, sampled every 100 ms on its own keep-alive connection
(a blocked loop answers late). RSS and descriptors come from /proc of the sidecar's PID, Redis connections
from `INFO clients` (our own INFO connection left out). Growth from the start window to the end window
beyond a tolerance is flagged. Every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.fixtures.redis_servers import redis_call, spawn_process, stop_process

from .load import Connection, HTTPError, input_text, response_id
from .processes import LOG_DIR, RedisServer, free_port, python_module, started
from .proxy_bench import sidecar
from .report import machine, write_json

PROBE_INTERVAL_S = 0.1
RESOURCE_INTERVAL_S = 0.5
REQUEST_TIMEOUT_S = 30.0
IDLE_SAMPLE_S = 2.0  # probes taken before the load starts and after it ends
WINDOW_SHARE = 0.1  # the start and end windows: this share of the timed run each (at least MIN_WINDOW_S)
MIN_WINDOW_S = 3.0


@dataclass(frozen=True)
class Bounds:
    requests: int
    seconds: float | None
    concurrency: int
    warmup: int
    disconnect_every: int
    turns: int = 20
    input_bytes: int = 200
    engine_deltas: int = 8


FULL = Bounds(requests=200_000, seconds=None, concurrency=32, warmup=10_000, disconnect_every=5_000)
QUICK = Bounds(requests=600, seconds=60.0, concurrency=4, warmup=100, disconnect_every=50)


# --------------------------------------------------------------------------------------------------
# the load generator (`python -m bench.soak --load ...`, its own process)


@dataclass
class Progress:
    sent: int = 0
    ok_json: int = 0
    ok_stream: int = 0
    disconnects: int = 0
    errors: int = 0
    first_error: str = ""
    seconds: float = 0.0


class SoakConnection(Connection):
    async def drop_mid_stream(self, path: str, body: bytes) -> None:
        """Send a streamed request, read its head and first chunk, then close the socket under it."""
        reader, writer = await self._connect()
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), self.port, len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            self.close()
            raise HTTPError(f"HTTP {status} on a stream to drop")
        await reader.readuntil(b"\r\n")  # the first chunk's size line: the stream has started
        if self.writer is not None:
            self.writer.transport.abort()  # a reset, as a client that goes away does
        self.reader = self.writer = None


async def _worker(
    conn: SoakConnection, args: argparse.Namespace, rng: random.Random, progress: Progress, budget: list[int]
) -> None:
    deadline = time.monotonic() + args.seconds if args.seconds else float("inf")
    while True:
        previous: str | None = None
        for _ in range(args.turns):
            if budget[0] <= 0 or time.monotonic() > deadline:
                return
            budget[0] -= 1
            progress.sent += 1
            stream = rng.random() < 0.5
            drop = progress.sent % args.disconnect_every == 0
            request: dict[str, Any] = {
                "model": "bench-model",
                "input": input_text(rng, args.input_bytes),
                "stream": stream or drop,
            }
            if previous is not None:
                request["previous_response_id"] = previous
            body = orjson.dumps(request)
            try:
                if drop:
                    await asyncio.wait_for(conn.drop_mid_stream("/v1/responses", body), REQUEST_TIMEOUT_S)
                    progress.disconnects += 1
                    break  # the dropped turn may be stored incomplete or not at all: start over
                status, answer, _ = await asyncio.wait_for(
                    conn.post("/v1/responses", body), REQUEST_TIMEOUT_S
                )
                if status != 200:
                    raise HTTPError(f"HTTP {status}: {answer[:300]!r}")
                previous = response_id(answer, stream)
            except (
                HTTPError,
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                ValueError,
                KeyError,
            ) as exc:
                progress.errors += 1
                progress.first_error = progress.first_error or f"{exc.__class__.__name__}: {exc}"
                conn.close()
                break
            if stream:
                progress.ok_stream += 1
            else:
                progress.ok_json += 1


def _write_progress(path: Path, progress: Progress) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(asdict(progress)))
    os.replace(tmp, path)  # the driver never reads half a file


async def _load(args: argparse.Namespace) -> None:
    progress = Progress()
    conns = [SoakConnection("127.0.0.1", args.port) for _ in range(args.concurrency)]
    budget = [args.requests]
    started_at = time.monotonic()

    async def report() -> None:
        while True:
            progress.seconds = time.monotonic() - started_at
            _write_progress(args.progress, progress)
            await asyncio.sleep(0.2)

    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(
            *(
                _worker(c, args, random.Random(args.seed * 1000 + n), progress, budget)
                for n, c in enumerate(conns)
            )
        )
    finally:
        reporter.cancel()
        for conn in conns:
            conn.close()
        progress.seconds = time.monotonic() - started_at
        _write_progress(args.progress, progress)
        args.progress.with_suffix(".done").touch()


def load_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak --load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--disconnect-every", type=int, required=True)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--input-bytes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--progress", type=Path, required=True)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_load(args))


# --------------------------------------------------------------------------------------------------
# what the driver measures, from outside the sidecar


@dataclass
class Samples:
    probes: list[tuple[float, float | None]] = field(default_factory=list)  # (t, healthz ms | None: failed)
    resources: list[tuple[float, float, int, int]] = field(default_factory=list)  # (t, RSS MiB, fds, redis)


class Sampler:
    """Two threads: healthz every 100 ms on one keep-alive connection; RSS, fds, Redis clients every 0.5 s."""

    def __init__(self, pid: int, port: int, redis_port: int) -> None:
        self.pid, self.port, self.redis_port = pid, port, redis_port
        self.samples = Samples()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._probe_loop, daemon=True),
            threading.Thread(target=self._resource_loop, daemon=True),
        ]

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _probe_loop(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/convostore/healthz")
                answer = conn.getresponse()
                answer.read()
                ms: float | None = (time.perf_counter() - started) * 1000 if answer.status == 200 else None
            except (OSError, http.client.HTTPException):
                ms = None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.samples.probes.append((time.monotonic(), ms))
            next_at += PROBE_INTERVAL_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    def _resource_loop(self) -> None:
        while not self._stop.is_set():
            self.samples.resources.append(
                (time.monotonic(), rss_mib(self.pid), open_fds(self.pid), redis_clients(self.redis_port))
            )
            self._stop.wait(RESOURCE_INTERVAL_S)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_clients(port: int) -> int:
    info = str(redis_call(port, "INFO", "clients"))
    for line in info.splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":", 1)[1]) - 1  # INFO's own connection is ours, not the sidecar's
    return -1


def _window(samples: Samples, begin: float, end: float) -> dict[str, Any]:
    probes = [ms for t, ms in samples.probes if begin <= t <= end]
    latencies = sorted(ms for ms in probes if ms is not None)
    resources = [r for r in samples.resources if begin <= r[0] <= end]
    if not resources and samples.resources:  # a window shorter than the sampling interval: the nearest one
        middle = (begin + end) / 2
        resources = [min(samples.resources, key=lambda r: abs(r[0] - middle))]
    window: dict[str, Any] = {
        "seconds": round(end - begin, 1),
        "probes": len(probes),
        "probe_failures": sum(ms is None for ms in probes),
    }
    if latencies:
        window["lag_p50_ms"] = _percentile(latencies, 0.50)
        window["lag_p99_ms"] = _percentile(latencies, 0.99)
        window["lag_max_ms"] = latencies[-1]
    if resources:
        window["rss_mib"] = statistics.median(r[1] for r in resources)
        window["fds"] = statistics.median(r[2] for r in resources)
        window["redis_connections"] = statistics.median(r[3] for r in resources)
        window["rss_mib_max"] = max(r[1] for r in resources)
        window["fds_max"] = max(r[2] for r in resources)
        window["redis_connections_max"] = max(r[3] for r in resources)
    return window


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# Growth from the start window to the end window that is flagged: (absolute, relative to the start).
TOLERANCE = {
    "rss_mib": (16.0, 0.10),
    "fds": (4.0, 0.10),
    "redis_connections": (2.0, 0.10),
    "lag_p50_ms": (2.0, 1.0),
    "lag_p99_ms": (10.0, 1.0),
}


def growth_flags(start: dict[str, Any], end: dict[str, Any]) -> dict[str, bool]:
    flags = {}
    for name, (absolute, relative) in TOLERANCE.items():
        if name in start and name in end:
            flags[name] = end[name] > start[name] + max(absolute, relative * start[name])
    return flags


# --------------------------------------------------------------------------------------------------
# the driver


@contextmanager
def _load_process(port: int, bounds: Bounds, progress: Path) -> Iterator[Any]:
    argv = python_module(
        "bench.soak",
        "--load",
        "--port",
        str(port),
        "--requests",
        str(bounds.requests),
        "--seconds",
        str(bounds.seconds or 0),
        "--concurrency",
        str(bounds.concurrency),
        "--disconnect-every",
        str(bounds.disconnect_every),
        "--turns",
        str(bounds.turns),
        "--input-bytes",
        str(bounds.input_bytes),
        "--progress",
        str(progress),
    )
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    proc = spawn_process(argv, log_path=LOG_DIR / "soak-load.log")
    try:
        yield proc
    finally:
        stop_process(proc)


def _read_progress(path: Path) -> dict[str, Any]:
    with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError):
        return dict(orjson.loads(path.read_bytes()))
    return {}


def _drive(sidecar_port: int, bounds: Bounds, sampler: Sampler, workdir: Path) -> dict[str, Any]:
    """Run the load to its bound; the times warm-up ended and the load finished, and its final counts."""
    progress_path = workdir / "progress.json"
    warmed_at: float | None = None
    last_print = time.monotonic()
    with _load_process(sidecar_port, bounds, progress_path) as proc:
        load_started = time.monotonic()
        while not progress_path.with_suffix(".done").exists():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the load generator exited with {proc.returncode}; see {LOG_DIR}/soak-load.log"
                )
            time.sleep(0.1)
            progress = _read_progress(progress_path)
            sent = int(progress.get("sent", 0))
            now = time.monotonic()
            if warmed_at is None and sent >= bounds.warmup:
                warmed_at = now
            if now - last_print >= 10:
                last_print = now
                rss = sampler.samples.resources[-1][1] if sampler.samples.resources else 0.0
                print(
                    f"  soak: {sent:7d}/{bounds.requests} sent, {progress.get('errors', 0)} errors, "
                    f"{progress.get('disconnects', 0)} dropped, RSS {rss:.1f} MiB, "
                    f"{now - load_started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        ended_at = time.monotonic()
        proc.wait(timeout=30)
    final = _read_progress(progress_path)
    return {
        "load_started": load_started,
        "warmed_at": warmed_at or load_started,
        "ended_at": ended_at,
        "pid": proc.pid,
        **final,
    }


def run(bounds: Bounds, out: Path, quick: bool = False) -> dict[str, Any]:
    engine_port = free_port()
    engine_argv = python_module(
        "bench.engine", "--port", str(engine_port), "--deltas", str(bounds.engine_deltas)
    )
    with (
        tempfile.TemporaryDirectory(prefix="convostore-soak-") as workdir,
        RedisServer() as redis,
        started("bench-engine", engine_argv, engine_port) as engine,
        sidecar(engine.url, redis.url) as proxy,
        Sampler(proxy.pid, proxy.port, redis.port) as sampler,
    ):
        pids = {"sidecar": proxy.pid, "engine": engine.pid, "redis": redis.pid}
        time.sleep(IDLE_SAMPLE_S)
        idle_before = (time.monotonic() - IDLE_SAMPLE_S, time.monotonic())
        load = _drive(proxy.port, bounds, sampler, Path(workdir))
        time.sleep(IDLE_SAMPLE_S + RESOURCE_INTERVAL_S)  # settle, then the idle samples after
        idle_after = (time.monotonic() - IDLE_SAMPLE_S, time.monotonic())
    samples = sampler.samples
    timed = max(load["ended_at"] - load["warmed_at"], 1e-9)
    width = max(MIN_WINDOW_S, WINDOW_SHARE * timed)
    windows = {
        "before": _window(samples, *idle_before),
        "start": _window(samples, load["warmed_at"], min(load["warmed_at"] + width, load["ended_at"])),
        "end": _window(samples, max(load["ended_at"] - width, load["warmed_at"]), load["ended_at"]),
        "after": _window(samples, *idle_after),
    }
    flags = growth_flags(windows["start"], windows["end"])
    seconds = load["ended_at"] - load["load_started"]
    result: dict[str, Any] = {
        "kind": "soak",
        "quick": quick,
        "machine": machine(),
        "bounds": asdict(bounds),
        "load": {
            "sent": load.get("sent", 0),
            "ok_json": load.get("ok_json", 0),
            "ok_stream": load.get("ok_stream", 0),
            "disconnects": load.get("disconnects", 0),
            "errors": load.get("errors", 0),
            "first_error": load.get("first_error", ""),
            "seconds": round(seconds, 1),
            "rps": round(load.get("sent", 0) / seconds, 1) if seconds else 0.0,
            "warmup_seconds": round(load["warmed_at"] - load["load_started"], 1),
        },
        "windows": windows,
        "growth": flags,
        "leak_suspected": any(flags.get(name, False) for name in ("rss_mib", "fds", "redis_connections")),
        "pids": {**pids, "load": load["pid"]},
    }
    write_json(out, result)
    print(soak_table(result))
    return result


_ROWS = (
    ("RSS (MiB)", "rss_mib", "{:.1f}"),
    ("open file descriptors", "fds", "{:.0f}"),
    ("Redis connections", "redis_connections", "{:.0f}"),
    ("loop lag p50 (ms, healthz)", "lag_p50_ms", "{:.2f}"),
    ("loop lag p99 (ms, healthz)", "lag_p99_ms", "{:.2f}"),
)


def soak_table(result: dict[str, Any]) -> str:
    load, windows, growth = result["load"], result["windows"], result["growth"]
    lines = [
        f"soak: {load['sent']} requests ({load['ok_json']} json, {load['ok_stream']} streamed, "
        f"{load['disconnects']} dropped mid-stream, {load['errors']} errors) at concurrency "
        f"{result['bounds']['concurrency']} in {load['seconds']} s ({load['rps']} req/s); warm-up "
        f"{load['warmup_seconds']} s; windows of {windows['start']['seconds']} s",
        "",
        "| measure | idle before | start (after warm-up) | end | idle after | growth |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, key, fmt in _ROWS:
        cells = [
            fmt.format(windows[w][key]) if key in windows[w] else "-"
            for w in ("before", "start", "end", "after")
        ]
        flag = "GROWTH" if growth.get(key) else "ok"
        lines.append(f"| {label} | {' | '.join(cells)} | {flag} |")
    lines.append("")
    lines.append("leak suspected: " + ("YES" if result["leak_suspected"] else "no"))
    return "\n".join(lines)


def bounds_from(
    *, quick: bool, requests: int | None, seconds: float | None, concurrency: int | None
) -> Bounds:
    base = QUICK if quick else FULL
    total = requests if requests is not None else base.requests
    return Bounds(
        requests=total,
        seconds=seconds if seconds is not None else base.seconds,
        concurrency=concurrency or base.concurrency,
        warmup=min(base.warmup, max(total // 10, 1)),
        disconnect_every=min(base.disconnect_every, max(total // 10, 2)),
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        load_main(sys.argv[2:])
    else:
        sys.exit("run `python -m bench soak` (this module's `--load` mode is the load generator it starts)")
