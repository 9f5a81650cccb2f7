"""`python -m bench.server_floor --quick` runs end to end: every server kind answers at both concurrencies.

Shape only: timings on a shared 2-core machine are never asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.bench.test_bench_smoke import run_bench


@pytest.mark.timeout(300)
def test_server_floor_quick_measures_every_server(tmp_path: Path) -> None:
    out = tmp_path / "server_floor.json"
    run_bench("--quick", "--out", str(out), module="bench.server_floor")
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    assert result["kind"] == "server_floor" and result["quick"] is True
    rows = result["rows"]
    assert {(row["server"], row["concurrency"]) for row in rows} == {
        (server, concurrency)
        for server in ("aiohttp-app", "aiohttp-lowlevel", "httptools")
        for concurrency in (1, 16)
    }
    for row in rows:
        assert row["rps"] > 0 and row["cpu_us_per_request"] > 0
    assert all(row["over_httptools_us"] == 0 for row in rows if row["server"] == "httptools")
