"""`python -m bench.ab` runs two revisions side by side (git archives, not the work tree), every call.

Shape only: timings on a shared 2-core machine are never asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.bench.test_bench_smoke import run_bench


@pytest.mark.timeout(300)
def test_ab_compares_every_call_on_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    run_bench("--before", "HEAD", "--samples", "20", "--out", str(out), module="bench.ab")
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    assert result["kind"] == "ab" and result["before"] == "HEAD" and result["after"] == "HEAD"
    assert [row["call"] for row in result["rows"]] == ["healthz", "resolve", "append", "responses"]
    for row in result["rows"]:
        for side in ("before", "after"):
            assert set(row[side]) >= {"p50", "p99", "cpu_us"} and row[side]["cpu_us"] > 0
