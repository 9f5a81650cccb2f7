"""`--workers N` on real processes: N workers on one port (SO_REUSEPORT) on a real redis-server, metrics
summed across them, SIGTERM drains all and exits 0, a worker that dies is restarted, memory:// refuses more
than one, and `auto` resolves to the CPUs the container's quota allows."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from sidecar.config import Config, ConfigError, available_cpus
from sidecar.workers import PID_HEADER, PID_HEADER_FLAG
from tests.fixtures.redis_servers import RedisServer
from tests.fixtures.sidecar_process import CONVOSTORE_BIN
from tests.process.processes import Process, fake_engine, one_error_line, serve_and_stop, sidecar


@pytest.fixture
def engine() -> Iterator[Process]:
    proc = fake_engine("ok")
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def two_workers(
    redis_server: RedisServer, engine: Process, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Process]:
    monkeypatch.setenv(PID_HEADER_FLAG, "1")  # inherited by the sidecar: workers name themselves
    proc = sidecar(upstream=engine.url, redis_url=redis_server.url, extra=["--workers", "2"])
    try:
        _wait_for_log(proc, "with 2 workers")  # healthz answered by one worker; this once all listen
        yield proc
    finally:
        proc.close()


def _wait_for_log(proc: Process, text: str) -> None:
    deadline = time.monotonic() + 20
    while text not in proc.log():
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.05)


def _children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _wait_for_children(pid: int, count: int, other_than: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = _children(pid)
        if len(children) == count and not children & other_than:
            return children
        time.sleep(0.05)
    raise AssertionError(f"supervisor {pid} has children {_children(pid)}, wanted {count} new ones")


async def _pids_answering(url: str, requests: int = 60) -> set[int]:
    """The worker pids that answered `requests` healthz calls, each on a new connection (the kernel spreads
    new connections over the workers' listeners)."""
    pids: set[int] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        for _ in range(requests):
            async with client.get(f"{url}/convostore/healthz") as resp:
                assert resp.status == 200
                pids.add(int(resp.headers[PID_HEADER]))
    return pids


def _requests_total(metrics: str, route_part: str, status: str = "200") -> float:
    pattern = re.compile(r'^convostore_requests_total\{route="([^"]*)",status="([^"]*)"\} (\S+)$', re.M)
    return sum(
        float(v) for route, code, v in pattern.findall(metrics) if route_part in route and code == status
    )


async def test_two_workers_share_the_port_and_sum_their_metrics(two_workers: Process) -> None:
    workers = _wait_for_children(two_workers.proc.pid, 2)
    assert await _pids_answering(two_workers.url) == workers

    appends = 40
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        for n in range(appends):
            message = {"role": "user", "content": f"turn {n}"}
            async with client.post(
                f"{two_workers.url}/v1/sessions/conv_workers/append", json=message
            ) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["version"] == n + 1  # one conversation, whichever worker wrote
        answered_by: set[int] = set()
        for _ in range(20):  # every worker's scrape sees every worker's counts
            async with client.get(f"{two_workers.url}/convostore/metrics") as resp:
                answered_by.add(int(resp.headers[PID_HEADER]))
                assert _requests_total(await resp.text(), "/append") == appends
    assert answered_by == workers
    assert "listening on" in two_workers.log() and "with 2 workers" in two_workers.log()


async def test_sigterm_drains_every_worker_and_exits_0(two_workers: Process) -> None:
    workers = _wait_for_children(two_workers.proc.pid, 2)
    two_workers.terminate()
    assert await asyncio.to_thread(two_workers.wait, 30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its supervisor"
    assert two_workers.log().count("drained:") == 2, two_workers.log()


async def test_a_worker_that_dies_is_restarted_and_its_counts_kept(two_workers: Process) -> None:
    workers = _wait_for_children(two_workers.proc.pid, 2)
    await _pids_answering(two_workers.url, 20)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    survivors = _wait_for_children(two_workers.proc.pid, 2, other_than={victim})
    assert survivors - workers, "no new worker"
    for _ in range(100):  # the new worker reports ready shortly after it starts
        if await _pids_answering(two_workers.url, 30) == survivors:
            break
        await asyncio.sleep(0.1)
    assert await _pids_answering(two_workers.url) == survivors
    async with aiohttp.ClientSession() as client, client.get(f"{two_workers.url}/convostore/metrics") as resp:
        # The dead worker's counts stay in the sums: counters never go down across a restart.
        assert _requests_total(await resp.text(), "/convostore/healthz") >= 20 + 30 + 60
    assert "worker 0 was killed by SIGKILL; restarting it" in two_workers.log() or (
        "worker 1 was killed by SIGKILL; restarting it" in two_workers.log()
    )
    two_workers.terminate()
    assert await asyncio.to_thread(two_workers.wait, 30) == 0


def test_memory_with_two_workers_is_one_line_naming_the_setting() -> None:
    line = one_error_line(serve_and_stop("--workers", "2"))
    assert line.startswith("convostore: configuration error: --workers (CONVOSTORE_WORKERS):")
    assert "memory://" in line
    line = one_error_line(serve_and_stop(env={"CONVOSTORE_WORKERS": "3", "REDIS_URL": "memory://"}))
    assert line.startswith("convostore: configuration error: CONVOSTORE_WORKERS:")


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_a_bad_workers_value_is_one_line(value: str) -> None:
    assert "error: CONVOSTORE_WORKERS:" in one_error_line(serve_and_stop(env={"CONVOSTORE_WORKERS": value}))


def test_a_bad_setting_read_by_the_workers_is_still_one_line(redis_server: RedisServer) -> None:
    # CONVOSTORE_TRACING is read when the app is built; the supervisor checks it before starting workers.
    tracing = {"CONVOSTORE_TRACING": "bogus"}
    result = serve_and_stop("--workers", "2", "--redis-url", redis_server.url, env=tracing)
    assert "error: CONVOSTORE_TRACING=" in one_error_line(result)


def test_a_taken_port_with_workers_is_one_line(redis_server: RedisServer) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(CONVOSTORE_BIN), "serve", "--listen", f"127.0.0.1:{port}", "--workers", "2",
             "--redis-url", redis_server.url],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"convostore: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_auto_is_one_worker_on_memory_and_the_allowed_cpus_on_redis() -> None:
    assert Config.from_env({}).workers == 1
    assert Config.from_env({"CONVOSTORE_WORKERS": "auto"}).workers == 1
    assert Config.from_env({"REDIS_URL": "redis://127.0.0.1:1"}).workers == available_cpus()
    assert Config.from_env({"REDIS_URL": "redis://127.0.0.1:1"}, workers="3").workers == 3
    with pytest.raises(ConfigError, match=r"^CONVOSTORE_WORKERS: 2 workers need a shared store"):
        Config.from_env({"CONVOSTORE_WORKERS": "2"})


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({}, None),  # no cgroup files: the affinity alone
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu.max": "50000 100000\n"}, 1),  # half a CPU: still one worker
        ({"cpu.max": "250000 100000\n"}, 2),  # 2.5 CPUs: rounded down
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    ],
)
def test_auto_reads_the_cgroup_quota(tmp_path: Path, files: dict[str, str], quota: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == (affinity if quota is None else min(affinity, quota))
