"""The shipped policy file (examples/policy.yaml) is one a sidecar starts with and serves by."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from tests.fixtures.redis_servers import free_port
from tests.fixtures.sidecar_process import SidecarProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def test_convostore_serve_starts_with_the_example_policy_file() -> None:
    # No engine behind it: `responses` mode does not probe, so start-up checks only the policy file itself.
    sidecar = SidecarProcess(
        upstream=f"http://127.0.0.1:{free_port()}",
        upstream_api="responses",
        redis_url="memory://",
        extra_args=("--config", str(EXAMPLE)),
    )
    try:
        with urllib.request.urlopen(f"{sidecar.url}/convostore/healthz", timeout=5.0) as resp:
            assert resp.status == 200
        # A pack the example defines is known: an unknown one would be a 400 before the engine is called.
        request = urllib.request.Request(
            f"{sidecar.url}/v1/sessions/conv_example/append",
            data=b'{"role": "user", "content": "Do you sell screws?"}',
            headers={"Content-Type": "application/json", "X-Prompt-Pack": "support"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5.0) as resp:
            assert resp.status == 200
    finally:
        sidecar.close()
