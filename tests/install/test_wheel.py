"""A wheel built from the checkout and installed in a fresh venv serves the session API on Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.redis_servers import RedisServer, free_port, spawn_process, stop_process

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_installed_wheel_serves_the_session_api_on_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("convostore-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    argv = [
        str(venv / "bin" / "convostore"),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--redis-url",
        redis_server.url,
    ]
    log = tmp_path / "sidecar.log"
    # cwd outside the checkout: nothing can be imported from the source tree.
    proc = spawn_process(argv, cwd=tmp_path, log_path=log)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, proc, log)
        appended = _post(
            f"{base}/v1/sessions/wheel-test/append", {"role": "user", "content": "Hello from a wheel"}
        )
        assert appended["version"] == 1
        with urllib.request.urlopen(f"{base}/v1/sessions/resolve?conversation_id=wheel-test", timeout=5) as r:
            resolved = json.loads(r.read())
        assert resolved["messages"] == [{"role": "user", "content": "Hello from a wheel"}]
        module = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sidecar; print(sidecar.__file__)"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert str(venv) in module  # the installed copy served, not the checkout
    finally:
        stop_process(proc)


def _post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        result: dict[str, object] = json.loads(r.read())
        return result


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the installed sidecar exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/convostore/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(
        f"the installed sidecar never became healthy:\n{log.read_text(errors='replace')[-3000:]}"
    )
