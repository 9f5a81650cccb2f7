"""`python -m bench`: the same chained-conversation load against the engine, the pass-through and each proxy.

Order matters on 2 cores: each target runs alone with the engine (nothing else of ours is up), the Redis a
target needs is started for it and stopped after, and SMG, whose router is busy even when idle, goes last.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .processes import (
    CpuMeter,
    RedisServer,
    free_port,
    python_module,
    started,
    wait_for_log,
    wait_until_quiet,
)
from .report import add_ratios, check_targets, checks_table, machine, proxy_table, summarise, write_json

ENGINE_DELTAS = 8
_SETTLE_S = 0.5  # let the previous run's sockets and processes go quiet before timing the next
QUIET_CORES = 0.15  # start a run only once the machine's other work uses less than this


@dataclass(frozen=True)
class Counts:
    requests_c1: int
    requests_c16: int
    seconds: float
    warmup_c1: int
    warmup_c16: int


FULL = Counts(requests_c1=2000, requests_c16=8000, seconds=8.0, warmup_c1=100, warmup_c16=640)
QUICK = Counts(requests_c1=60, requests_c16=160, seconds=2.0, warmup_c1=20, warmup_c16=64)
# (stream, concurrency, client): the raw client is the harness's floor; the openai SDK is what an application
# sees, and at concurrency 1 the two disagree on the sidecar (bench/README.md, "What a client sees").
SCENARIOS = (
    (False, 1, "raw"),
    (True, 1, "raw"),
    (False, 1, "openai"),
    (False, 16, "raw"),
    (True, 16, "raw"),
)


def scenario_name(stream: bool, concurrency: int, client: str = "raw") -> str:
    kind = "stream-ttfb" if stream else "nonstream"
    return f"{kind}{'-sdk' if client == 'openai' else ''}@{concurrency}"


def run_load(url: str, stream: bool, concurrency: int, counts: Counts, client: str = "raw") -> dict[str, Any]:
    """One closed-loop run in a separate process; its raw results."""
    c16 = concurrency > 1
    argv = python_module(
        "bench.load",
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(counts.requests_c16 if c16 else counts.requests_c1),
        "--seconds",
        str(counts.seconds),
        "--warmup",
        str(counts.warmup_c16 if c16 else counts.warmup_c1),
    )
    if stream:
        argv.append("--stream")
    if client != "raw":
        argv += ["--client", client]
    with tempfile.NamedTemporaryFile(prefix="bench-load-", suffix=".json") as out:
        argv += ["--out", out.name]
        return _run_load_process(argv, counts, Path(out.name))


def _run_load_process(argv: list[str], counts: Counts, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        argv, capture_output=True, timeout=counts.seconds + 120, check=False, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"load generator failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}"
        )
    return dict(orjson.loads(out.read_bytes()))


def measure(
    target: str,
    url: str,
    counts: Counts,
    watched: dict[str, int],
    on_run: Callable[[], dict[str, Any]] | None = None,
    before_run: Callable[[], None] | None = None,
    quiet_wait_s: float = 0.0,
    scenarios: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """The four scenarios against one target; `watched` names the processes whose CPU is accounted
    (the target's proxy as "proxy"), so CPU per request and a busy neighbour show in the results."""
    runs = []
    for stream, concurrency, client in SCENARIOS:
        name = scenario_name(stream, concurrency, client)
        if scenarios is not None and name not in scenarios:
            continue
        time.sleep(_SETTLE_S)
        waited = wait_until_quiet(QUIET_CORES, quiet_wait_s)
        if before_run is not None:
            before_run()
        with CpuMeter(watched) as cpu:
            raw = run_load(url, stream, concurrency, counts, client)
        run: dict[str, Any] = {
            "target": target,
            "scenario": name,
            "stream": stream,
            "concurrency": concurrency,
            "client": client,
            "count": len(raw["latency_ms"]),
            "errors": raw["errors"],
            "first_error": raw["first_error"],
            "seconds": raw["timed_s"],
            "rps": len(raw["latency_ms"]) / raw["timed_s"] if raw["timed_s"] else 0.0,
            "latency_ms": summarise(raw["latency_ms"]),
            "total_ms": summarise(raw["total_ms"]),
            "requests_sent": raw["sent"],
            "requests_chained": raw["chained"],
            "cpu_seconds": cpu.cpu_seconds,
            "other_cores": cpu.other_cores,
            "waited_for_quiet_s": waited,
        }
        if "proxy" in cpu.cpu_seconds and raw["sent"]:
            run["proxy_cpu_us_per_request"] = cpu.cpu_seconds["proxy"] / raw["sent"] * 1e6
        if on_run is not None:
            run.update(on_run())
        runs.append(run)
        print(
            f"  {target:15s} {run['scenario']:15s} n={run['count']:5d} err={run['errors']} "
            f"p50={run['latency_ms']['p50']:.3f} p99={run['latency_ms']['p99']:.3f} rps={run['rps']:.0f} "
            f"proxy-cpu/req={run.get('proxy_cpu_us_per_request', 0):.0f}us other-cores={cpu.other_cores:.2f}",
            file=sys.stderr,
            flush=True,
        )
        if raw["first_error"]:
            print(f"    first error: {raw['first_error'][:300]}", file=sys.stderr)
    return runs


@contextmanager
def sidecar(engine_url: str, redis_url: str, workers: int = 1) -> Iterator[Any]:
    """The sidecar with `workers` processes (`--workers`; its default, auto, would follow the machine)."""
    port = free_port()
    argv = python_module(
        "sidecar",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        engine_url,
        "--upstream-api",
        "responses",
        "--redis-url",
        redis_url,
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    )
    name = "sidecar-memory" if redis_url.startswith("memory://") else f"sidecar-redis-{workers}w"
    with started(name, argv, port) as proc:
        if workers > 1:  # the port answers once the first worker listens; wait for all of them
            wait_for_log(proc, f"with {workers} workers")
        yield proc


def smg_binary() -> str | None:
    here = Path(sys.executable).parent / "smg"
    return str(here) if here.exists() else shutil.which("smg")


@contextmanager
def smg(binary: str, engine_url: str, redis_url: str) -> Iterator[Any]:
    port = free_port()
    argv = [
        binary,
        "launch",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend",
        "openai",
        "--history-backend",
        "redis",
        "--redis-url",
        redis_url,
        "--worker-urls",
        engine_url,
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(free_port()),
        "--log-level",
        "warn",
    ]
    with started("smg", argv, port, timeout=60) as proc:
        yield proc


# Commands a client sends itself; anything else counted while scripts run came from inside a script.
_CLIENT_ONLY = frozenset(
    {
        "evalsha",
        "eval",
        "evalsha_ro",
        "eval_ro",
        "fcall",
        "script|load",
        "ping",
        "hello",
        "client|setinfo",
        "select",
        "info",
        "multi",
        "exec",
        "watch",
        "unwatch",
    }
)


def client_commands(stats: dict[str, int]) -> int:
    """Commands the proxy sent: all of them, or for a client that uses scripts only the non-data ones
    (INFO commandstats also counts every command a script runs, which is no round trip)."""
    if not any(name in stats for name in ("evalsha", "eval", "fcall")):
        return sum(stats.values())
    return sum(calls for name, calls in stats.items() if name in _CLIENT_ONLY)


def _redis_calls(server: RedisServer) -> Callable[[], dict[str, Any]]:
    def calls() -> dict[str, Any]:
        return {"redis_commands": server.command_stats()}

    return calls


def _measure_with_redis(
    engine_pid: int,
    target: str,
    open_proxy: Callable[[str], AbstractContextManager[Any]],
    counts: Counts,
    quiet_wait_s: float,
    scenarios: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    with RedisServer() as server, open_proxy(server.url) as proxy:
        watched = {"engine": engine_pid, "proxy": proxy.pid, "redis": server.pid}
        return measure(
            target,
            proxy.url,
            counts,
            watched,
            on_run=_redis_calls(server),
            before_run=server.reset_stats,
            quiet_wait_s=quiet_wait_s,
            scenarios=scenarios,
        )


def run(
    *,
    quick: bool,
    with_smg: bool,
    out: Path,
    quiet_wait_s: float = 60.0,
    only: frozenset[str] | None = None,
    scenarios: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Measure every target in turn (or those in `only`, the scenarios in `scenarios`);
    `quiet_wait_s`: how long each run may wait for neighbours to go idle."""

    def wanted(target: str) -> bool:
        return only is None or target in only

    counts = QUICK if quick else FULL
    quiet = 0.0 if quick else quiet_wait_s
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    started_at = time.monotonic()
    engine_port = free_port()
    engine_argv = python_module("bench.engine", "--port", str(engine_port), "--deltas", str(ENGINE_DELTAS))
    with started("engine", engine_argv, engine_port) as engine:
        if wanted("direct"):
            print("direct to the engine", file=sys.stderr)
            runs += measure(
                "direct", engine.url, counts, {"engine": engine.pid}, quiet_wait_s=quiet, scenarios=scenarios
            )
        if wanted("passthrough"):
            print("pass-through (the floor)", file=sys.stderr)
            port = free_port()
            pt_argv = python_module("bench.passthrough", "--port", str(port), "--upstream", engine.url)
            with started("passthrough", pt_argv, port) as proxy:
                runs += measure(
                    "passthrough",
                    proxy.url,
                    counts,
                    {"engine": engine.pid, "proxy": proxy.pid},
                    quiet_wait_s=quiet,
                    scenarios=scenarios,
                )
        if wanted("sidecar-memory"):
            print("sidecar on memory://", file=sys.stderr)
            with sidecar(engine.url, "memory://") as proxy:
                runs += measure(
                    "sidecar-memory",
                    proxy.url,
                    counts,
                    {"engine": engine.pid, "proxy": proxy.pid},
                    quiet_wait_s=quiet,
                    scenarios=scenarios,
                )
        if wanted("sidecar-redis"):
            print("sidecar on redis-server", file=sys.stderr)
            runs += _measure_with_redis(
                engine.pid, "sidecar-redis", lambda url: sidecar(engine.url, url), counts, quiet, scenarios
            )
        if wanted("sidecar-redis-2w"):
            print("sidecar on redis-server, --workers 2", file=sys.stderr)
            runs += _measure_with_redis(
                engine.pid,
                "sidecar-redis-2w",
                lambda url: sidecar(engine.url, url, workers=2),
                counts,
                quiet,
                scenarios,
            )
        binary = smg_binary() if with_smg and wanted("smg-redis") else None
        if binary is not None:
            print("SMG on redis-server (last, alone)", file=sys.stderr)
            runs += _measure_with_redis(
                engine.pid, "smg-redis", lambda url: smg(binary, engine.url, url), counts, quiet, scenarios
            )
        elif wanted("smg-redis"):
            note = "SMG skipped: " + ("--no-smg" if not with_smg else "`smg` not installed (pip install smg)")
            notes.append(note)
            print(note, file=sys.stderr)
    add_ratios(runs)
    for run_ in runs:
        stats = run_.get("redis_commands")
        if stats and run_["requests_sent"]:
            run_["redis_client_commands_per_request"] = client_commands(stats) / run_["requests_sent"]
    checks = check_targets(runs)
    result = {
        "kind": "proxy",
        "quick": quick,
        "machine": machine(),
        "counts": counts.__dict__,
        "load": {"turns_per_conversation": 20, "input_bytes": 200, "engine_deltas": ENGINE_DELTAS},
        "runs": runs,
        "targets": checks,
        "notes": notes,
        "wall_seconds": time.monotonic() - started_at,
    }
    write_json(out, result)
    print(proxy_table(runs))
    print("targets (stateful sidecar on Redis, ratios within this run):")
    print(checks_table(checks))
    print(
        "Redis commands the proxy sent per request (commands run inside scripts excluded; a pipeline of n "
        "commands counts n):"
    )
    for run_ in runs:
        if "redis_client_commands_per_request" in run_:
            print(
                f"  {run_['target']:14s} {run_['scenario']:15s} "
                f"{run_['redis_client_commands_per_request']:.2f} ({run_['requests_chained']} of "
                f"{run_['requests_sent']} requests chained; all commands seen by "
                f"the server: {run_['redis_commands']})"
            )
    for note in notes:
        print(note)
    print(f"wrote {out}")
    return result
