"""schemathesis against a live `convostore serve` process: generated from /convostore/openapi.json, every
answer must be no 5xx, of a documented status and content type, and match its documented schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.engine_process import FakeEngineProcess
from tests.fixtures.sidecar_process import SidecarProcess

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)

# Chat completions without X-Conversation-Id or X-Previous-Response-Id are the engine's route, passed
# through with the engine's own answers, which schemathesis would generate; test_fuzz_routes.py fuzzes the
# stateful form.


@pytest.fixture
def live_sidecar() -> Iterator[SidecarProcess]:
    """`convostore serve` in front of the fake engine (so readyz is 200, and methods no route of the sidecar
    takes, like TRACE, reach the engine's pass-through as they should)."""
    engine = FakeEngineProcess(mode="ok", delay=0.0, deltas=2)
    try:
        sidecar = SidecarProcess(upstream=engine.url, upstream_api="responses", redis_url="memory://")
        try:
            yield sidecar
        finally:
            sidecar.stop()
    finally:
        engine.stop()


@pytest.mark.timeout(150)
def test_schemathesis_finds_no_5xx_and_every_answer_matches_openapi_json(
    live_sidecar: SidecarProcess, tmp_path: Path
) -> None:
    if not SCHEMATHESIS.exists() and shutil.which("schemathesis") is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    done = subprocess.run(
        [
            str(SCHEMATHESIS if SCHEMATHESIS.exists() else "schemathesis"),
            "run",
            f"{live_sidecar.url}/convostore/openapi.json",
            "--checks",
            CHECKS,
            "--exclude-path",
            "/v1/chat/completions",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--max-time",
            "75",
            "--workers",
            "1",
            "--seed",
            "1",
            "--no-shrink",
            "--suppress-health-check",
            "all",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, f"{output}\n--- sidecar log ---\n{live_sidecar.log_tail()}"
