"""`convostore webhook` as a real subprocess over TLS, with a key pair the test makes (openssl CLI)."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.redis_servers import free_port, spawn_process, stop_process
from tests.fixtures.sidecar_process import CONVOSTORE_BIN

_START_TIMEOUT_S = 20.0


def make_key_pair(directory: Path, name: str = "tls") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA, as the chart's caBundle would be)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=convostore-webhook.test.svc",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:convostore-webhook.test.svc"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class WebhookProcess:
    def __init__(self, cert: Path, key: Path, *extra: str) -> None:
        self.cert, self.key = cert, key
        self.port = free_port()
        self.log_path = cert.parent / "webhook.log"
        argv = [
            str(CONVOSTORE_BIN), "webhook",
            "--listen", f"127.0.0.1:{self.port}",
            "--tls-cert", str(cert), "--tls-key", str(key),
            *extra,
        ]  # fmt: skip
        self.proc = spawn_process(argv, log_path=self.log_path)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def context(self, cafile: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(cafile or self.cert))

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"webhook exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"webhook not healthy after {_START_TIMEOUT_S}s:\n{self.log()}")
            time.sleep(0.05)

    def get(self, path: str, cafile: Path | None = None) -> tuple[int, Any]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5, context=self.context(cafile)) as resp:
            return resp.status, json.loads(resp.read())

    def post(self, body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /mutate as the API server does: JSON, over TLS verified against our CA."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/mutate", data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5, context=self.context()) as resp:
            assert resp.headers["Content-Type"].startswith("application/json")
            return resp.status, json.loads(resp.read())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    directory = tmp_path_factory.mktemp("webhook")
    cert, key = make_key_pair(directory)
    config = directory / "webhook.json"
    config.write_text(
        json.dumps(
            {
                "image": "registry.example/convostore:0.1.0",
                "imagePullPolicy": "Always",
                "redisSecret": {"name": "from-file", "key": "url"},
                "env": [{"name": "CONVOSTORE_UPSTREAM_API", "value": "chat"}],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            }
        )
    )
    process = WebhookProcess(
        cert, key, "--config", str(config), "--redis-secret-name", "convostore-redis", "--log-format", "json"
    )
    try:
        yield process
    finally:
        process.stop()
