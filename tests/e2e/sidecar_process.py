"""`convostore serve` as a subprocess in front of a real engine, started and stopped by PID."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.fixtures.redis_servers import free_port, spawn_process, stop_process

# The console script sits next to the interpreter running the tests (the project's venv).
CONVOSTORE_BIN = Path(sys.executable).with_name("convostore")
_START_TIMEOUT_S = 20.0


class SidecarProcess:
    """One sidecar process; `restart()` replaces it by a new process (new port) on the same store.

    Its stderr goes to `.log_path`, kept across restarts so a failure report shows every generation.
    """

    def __init__(self, *, upstream: str, upstream_api: str, redis_url: str) -> None:
        self.upstream = upstream
        self.upstream_api = upstream_api
        self.redis_url = redis_url
        self.log_path = Path(tempfile.mkdtemp(prefix="convostore-sidecar-")) / "sidecar.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "sidecar is not running"
        return self._proc.pid

    def start(self) -> None:
        self.port = free_port()
        argv = [
            str(CONVOSTORE_BIN), "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--upstream", self.upstream,
            "--upstream-api", self.upstream_api,
            "--redis-url", self.redis_url,
        ]  # fmt: skip
        self._proc = spawn_process(argv, log_path=self.log_path)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"convostore exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/convostore/healthz", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"convostore not healthy after {_START_TIMEOUT_S}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL after 10 s); the log stays for `log_tail()`."""
        stop_process(self._proc)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __repr__(self) -> str:
        return f"SidecarProcess(url={self.url!r}, upstream_api={self.upstream_api!r})"
