"""`--workers N`: a supervisor that runs N `convostore serve` processes on one port (SO_REUSEPORT).

Each worker is a whole sidecar (its own event loop, Redis connections and engine session) started as
`python -m sidecar serve <same flags> --workers 1`, told by the environment below that it is a worker.
The supervisor (docs/api.md §1, README "Operations"):
- checks the port first, so a taken port is one line, not one per worker;
- gives the workers a PROMETHEUS_MULTIPROC_DIR it creates (and removes at exit), so /convostore/metrics,
  answered by whichever worker a scrape reaches, sums every worker's counters and histograms;
- forwards SIGTERM and SIGINT to every worker (each drains as a single process does; a second signal cuts
  the drains short), waits for them, and exits 0 if they all exited 0, else 1;
- restarts a worker that dies after it was serving (SIGKILLed by the OOM killer, a crash), at most
  RESTARTS_ALLOWED times in RESTART_WINDOW_S; past that, or if a worker fails before it listens (a bad
  setting, the port taken), it stops the others and exits non-zero: a crash loop is for the orchestrator
  to see, not to hide.
Workers are in process groups of their own, so a terminal's Ctrl-C reaches them once (forwarded), not
twice; and they get SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG), so none is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

# Set by the supervisor in a worker's environment: the descriptor to write one byte to once listening.
READY_FD = "CONVOSTORE_WORKER_READY_FD"
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Test aid only: a worker adds `X-ConvoStore-Worker-Pid` to every answer (tests/process/test_workers.py).
PID_HEADER_FLAG = "CONVOSTORE_TEST_WORKER_PID_HEADER"
PID_HEADER = "X-ConvoStore-Worker-Pid"

RESTARTS_ALLOWED = 5
RESTART_WINDOW_S = 60.0
_PR_SET_PDEATHSIG = 1
# A worker's drain takes CONVOSTORE_DRAIN_SECONDS plus the fixed graces of sidecar/drain.py (11 s); past
# this much more, a worker that has not exited is SIGKILLed.
_GRACES_S = 20.0


def is_worker() -> bool:
    return READY_FD in os.environ


def report_ready() -> None:
    """In a worker, once its listener is up: tell the supervisor."""
    fd = int(os.environ.pop(READY_FD))
    with contextlib.suppress(OSError):
        os.write(fd, b"1")
        os.close(fd)


@dataclass
class Worker:
    slot: int
    proc: subprocess.Popen[bytes]
    ready_fd: int  # read end of its ready pipe; closed (-1) once it has reported or died
    ready: bool = False
    exit_code: int | None = None


@dataclass
class Supervisor:
    serve_argv: Sequence[str]  # the `serve` command line as given (without the program name)
    count: int
    host: str
    port: int
    drain_seconds: float
    workers: dict[int, Worker] = field(default_factory=dict)
    restarts: deque[float] = field(default_factory=deque)
    stopping: bool = False

    def run(self) -> int:
        problem = _port_problem(self.host, self.port)
        if problem:
            print(f"convostore: cannot listen on {self.host}:{self.port}: {problem}", file=sys.stderr)
            return 1
        metrics_dir = tempfile.mkdtemp(prefix="convostore-metrics-")
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous_wakeup = signal.set_wakeup_fd(wake_w)
        handlers = {s: signal.signal(s, _noop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        self._selector = selectors.DefaultSelector()
        self._selector.register(wake_r, selectors.EVENT_READ)
        try:
            for slot in range(self.count):
                self._start(slot, metrics_dir)
            return self._supervise(wake_r, metrics_dir)
        finally:
            self._stop_all()
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            self._selector.close()
            os.close(wake_r)
            os.close(wake_w)
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _supervise(self, wake_r: int, metrics_dir: str) -> int:
        announced = False
        while True:
            for key, _ in self._selector.select(timeout=1.0):
                if key.fd == wake_r:
                    self._on_signals(os.read(wake_r, 64))
                else:
                    self._on_ready(key.data)
            if not announced and all(w.ready for w in self.workers.values()):
                announced = True
                print(
                    f"convostore: listening on {self.host}:{self.port} with {self.count} workers",
                    file=sys.stderr,
                    flush=True,
                )
            code = self._reap(metrics_dir, announced)
            if code is not None:
                return code

    def _on_signals(self, signals: bytes) -> None:
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                # The first one starts every worker's drain; another one cuts the drains short.
                self.stopping = True
                for worker in self.workers.values():
                    if worker.exit_code is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(worker.proc.pid, signum)

    def _on_ready(self, worker: Worker) -> None:
        with contextlib.suppress(OSError):
            worker.ready = worker.ready or os.read(worker.ready_fd, 1) == b"1"
        self._close_ready(worker)

    def _reap(self, metrics_dir: str, announced: bool) -> int | None:
        """Collect exited workers; the supervisor's exit code once it should stop, else None."""
        from prometheus_client import multiprocess

        for worker in list(self.workers.values()):
            if worker.exit_code is not None or worker.proc.poll() is None:
                continue
            worker.exit_code = worker.proc.returncode
            self._close_ready(worker)
            multiprocess.mark_process_dead(worker.proc.pid, metrics_dir)  # type: ignore[no-untyped-call]
            if self.stopping:
                continue
            how = _how_it_ended(worker.exit_code)
            if not worker.ready:
                # Before listening: a setting, the port or the store's configuration; another try would fail
                # the same way.
                print(f"convostore: worker {worker.slot} {how} before it listened; stopping", file=sys.stderr)
                return self._give_up(worker.exit_code)
            now = time.monotonic()
            while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
                self.restarts.popleft()
            if len(self.restarts) >= RESTARTS_ALLOWED:
                print(
                    f"convostore: worker {worker.slot} {how}; {RESTARTS_ALLOWED} restarts in "
                    f"{RESTART_WINDOW_S:g}s already, stopping",
                    file=sys.stderr,
                )
                return self._give_up(1)
            self.restarts.append(now)
            print(f"convostore: worker {worker.slot} {how}; restarting it", file=sys.stderr, flush=True)
            self._start(worker.slot, metrics_dir)
        if self.stopping and all(w.exit_code is not None for w in self.workers.values()):
            return 0 if all(w.exit_code == 0 for w in self.workers.values()) else 1
        return None

    def _give_up(self, code: int) -> int:
        self.stopping = True
        self._stop_all()
        return code if code > 0 else 1

    def _start(self, slot: int, metrics_dir: str) -> None:
        ready_r, ready_w = os.pipe()
        env = {**os.environ, READY_FD: str(ready_w), MULTIPROC_DIR: metrics_dir}
        supervisor = os.getpid()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sidecar", *self.serve_argv, "--workers", "1"],
                env=env,
                pass_fds=(ready_w,),
                stdin=subprocess.DEVNULL,
                process_group=0,
                preexec_fn=lambda: _die_with(supervisor),
            )
        finally:
            os.close(ready_w)
        worker = Worker(slot, proc, ready_r)
        self.workers[slot] = worker
        self._selector.register(ready_r, selectors.EVENT_READ, worker)

    def _close_ready(self, worker: Worker) -> None:
        if worker.ready_fd >= 0:
            self._selector.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = -1

    def _stop_all(self) -> None:
        """SIGTERM to every worker still running, then wait for them (they drain); SIGKILL after a
        bound, so the supervisor never leaves one behind."""
        running = [w for w in self.workers.values() if w.proc.poll() is None]
        for worker in running:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        for worker in running:
            try:
                worker.proc.wait(timeout=self.drain_seconds + _GRACES_S)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        for worker in self.workers.values():
            self._close_ready(worker)


def _noop(signum: int, frame: object) -> None:
    """Signals are read from the wake-up pipe; the handler only has to exist (and not raise)."""


def _die_with(supervisor: int) -> None:
    """In the forked child before exec: SIGTERM when the supervisor dies, even if it is SIGKILLed."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before prctl took effect
        os._exit(1)


def _port_problem(host: str, port: int) -> str | None:
    """Why the workers could not bind host:port (with SO_REUSEPORT), or None."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return str(exc.strerror)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                return exc.strerror or str(exc)
            raise
    return None


def _how_it_ended(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
