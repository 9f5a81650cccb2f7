"""`python -m bench.ab` runs two revisions side by side (git archives, not the work tree), every call.

Shape only: timings on a shared 2-core machine are never asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_ab_compares_every_call_on_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.ab", "--before", "HEAD", "--samples", "20", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    assert result["kind"] == "ab" and result["before"] == "HEAD" and result["after"] == "HEAD"
    assert [row["call"] for row in result["rows"]] == ["healthz", "resolve", "append", "responses"]
    for row in result["rows"]:
        for side in ("before", "after"):
            assert set(row[side]) >= {"p50", "p99", "cpu_us"} and row[side]["cpu_us"] > 0
