"""`python -m bench sweep --quick` runs end to end: every history length, from one turn to ~400 KB, measured.

Shape only: timings on a shared 2-core machine are never asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.bench.test_bench_smoke import run_bench


@pytest.mark.timeout(300)
def test_sweep_quick_measures_every_history_length(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    run_bench("sweep", "--quick", "--out", str(out))
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    assert result["kind"] == "sweep" and result["quick"] is True
    rows = result["rows"]
    assert [row["turns"] for row in rows] == [1, 20, 100, 100]
    assert [row["items"] for row in rows] == [2, 40, 200, 200]  # a stored input and answer per turn
    sizes = [row["history_bytes"] for row in rows]
    assert sizes == sorted(sizes) and 350_000 <= sizes[-1] <= 450_000  # ~100,000 tokens
    for row in rows:
        assert row["samples"] > 0
        assert row["sidecar_cpu_us_per_request"] > 0
        assert set(row["sidecar_ms"]) >= {"p50", "p95", "p99"} and "added_p50_ms" in row
    assert all("cpu_us_per_extra_kb" in row for row in rows[1:])
