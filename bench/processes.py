"""Every process a benchmark starts: spawned with a log, waited for on its port, stopped by PID."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.redis_servers import RedisServer, free_port, spawn_process, stop_process

__all__ = ["RedisServer", "Started", "free_port", "started", "wait_for_log", "wait_for_port"]

LOG_DIR = Path(tempfile.gettempdir()) / "convostore-bench-logs"
_READY_TIMEOUT_S = 30.0


class Started:
    """A process we spawned; `stop()` sends SIGTERM to its PID (SIGKILL after a grace period) and reaps it."""

    def __init__(self, name: str, argv: list[str], port: int) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = port
        self.log_path = LOG_DIR / f"{name}-{port}.log"
        self.log_path.unlink(missing_ok=True)
        self.proc: subprocess.Popen[bytes] | None = spawn_process(argv, log_path=self.log_path)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = _READY_TIMEOUT_S) -> None:
        assert self.proc is not None
        wait_for_port(self.port, timeout, alive=lambda: self.proc is not None and self.proc.poll() is None)
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def wait_for_port(port: int, timeout: float, alive: object = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if callable(alive) and not alive():
            return  # the caller reports the exit with the log
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")
        time.sleep(0.05)


def wait_for_log(proc: Started, text: str, timeout: float = _READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log_tail(200):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name}: no {text!r} in its log after {timeout}s:\n{proc.log_tail()}")
        time.sleep(0.05)


@contextmanager
def started(name: str, argv: list[str], port: int, timeout: float = _READY_TIMEOUT_S) -> Iterator[Started]:
    """Start, wait until it accepts connections, yield, and stop it by PID whatever happens."""
    proc = Started(name, argv, port)
    try:
        proc.wait_ready(timeout)
        yield proc
    finally:
        proc.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_ticks(pid: int) -> int:
    """CPU ticks of `pid` and of its live descendants (a `--workers N` sidecar's workers are its CPU)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    own = int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of the whole line)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own + sum(_process_ticks(int(child)) for child in children)


def _busy_ticks() -> int:
    # first line of /proc/stat: cpu user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4]


def wait_until_quiet(max_other_cores: float, timeout_s: float, sample_s: float = 1.0) -> float:
    """Wait (up to `timeout_s`) until the machine's busy CPU over `sample_s` is below `max_other_cores`;
    our own idle processes count too, which is the point. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        busy = _busy_ticks()
        time.sleep(sample_s)
        if (_busy_ticks() - busy) / _CLOCK_TICKS / sample_s < max_other_cores:
            break
    return time.monotonic() - started


class CpuMeter:
    """CPU used during a run: by each watched process, by reaped children (the load generator), and by
    everything else on the machine, so a run disturbed by a neighbour shows it."""

    def __init__(self, watched: dict[str, int]) -> None:
        self.watched = watched

    def __enter__(self) -> CpuMeter:
        self._start = time.monotonic()
        self._busy = _busy_ticks()
        self._own = {name: _process_ticks(pid) for name, pid in self.watched.items()}
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc_info: object) -> None:
        seconds = max(time.monotonic() - self._start, 1e-9)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        per_process = {name: (_process_ticks(pid) - self._own[name]) / _CLOCK_TICKS
                       for name, pid in self.watched.items()}  # fmt: skip
        per_process["load generator"] = (children.ru_utime - self._children.ru_utime) + (
            children.ru_stime - self._children.ru_stime
        )
        busy = (_busy_ticks() - self._busy) / _CLOCK_TICKS
        self.seconds = seconds
        self.cpu_seconds = per_process
        self.other_cores = max(0.0, busy - sum(per_process.values())) / seconds
