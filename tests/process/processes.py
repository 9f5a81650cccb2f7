"""`convostore serve` and the fake engine as processes of their own, for tests of signals, exit codes and
start-up; every process is started and stopped by PID (tests/fixtures/redis_servers.py bookkeeping)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tests.fixtures.redis_servers import free_port, spawn_process, stop_process
from tests.fixtures.sidecar_process import CONVOSTORE_BIN

REPO = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 20.0


def _wait_for(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not up after {_START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.05)


class Process:
    """One child process with its output in a log file; `stop()` is SIGTERM-then-SIGKILL by PID."""

    def __init__(self, argv: list[str], health_path: str, port: int) -> None:
        self.port = port
        self.log_path = Path(tempfile.mkdtemp(prefix="convostore-proc-")) / "out.log"
        self.proc = spawn_process(argv, cwd=REPO, log_path=self.log_path)
        try:
            _wait_for(f"{self.url}{health_path}", self.proc, self.log_path)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def terminate(self) -> None:
        """SIGTERM by PID; the process keeps running while it drains."""
        os.kill(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL after 10 s); the log stays for `log()`."""
        stop_process(self.proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def fake_engine(mode: str = "slow", *, delay: float = 0.05, deltas: int = 4) -> Process:
    port = free_port()
    argv = [
        sys.executable, "-m", "tests.fixtures.fake_engine", "--port", str(port), "--mode", mode,
        "--delay", str(delay), "--deltas", str(deltas),
    ]  # fmt: skip
    return Process(argv, "/health", port)


def sidecar(*, upstream: str, redis_url: str, extra: Sequence[str] = ()) -> Process:
    port = free_port()
    argv = [
        str(CONVOSTORE_BIN), "serve", "--listen", f"127.0.0.1:{port}", "--upstream", upstream,
        "--upstream-api", "responses", "--redis-url", redis_url, "--log-format", "text",
        "--workers", "1",  # one process whose log the tests read; `extra` may ask for more
        *extra,
    ]  # fmt: skip
    return Process(argv, "/convostore/healthz", port)


def serve_and_stop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`convostore serve` that must stop at once (configuration errors come before anything listens),
    with no CONVOSTORE_* or REDIS_URL from the test's own environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVOSTORE_") and k != "REDIS_URL"}
    return subprocess.run(
        [str(CONVOSTORE_BIN), "serve", "--listen", "127.0.0.1:1", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a start-up that stopped with exit 2."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]
