"""`python -m bench soak` at a tiny size: it runs end to end, reports every measure in every window, drops
some streams mid-way without errors, and leaves none of its processes behind. Timings are never asserted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.bench.test_bench_smoke import run_bench

MEASURES = {"rss_mib", "fds", "redis_connections", "lag_p50_ms", "lag_p99_ms"}


@pytest.mark.timeout(300)
def test_soak_quick_reports_resources_and_lag_at_start_and_end(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run_bench("soak", "--quick", "--requests", "400", "--concurrency", "4", "--out", str(out), timeout=240)
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    assert result["kind"] == "soak" and result["quick"] is True
    load = result["load"]
    assert load["sent"] == 400 and load["errors"] == 0, load["first_error"]
    assert load["disconnects"] >= 1 and load["ok_json"] > 0 and load["ok_stream"] > 0
    assert load["ok_json"] + load["ok_stream"] + load["disconnects"] == load["sent"]
    for name in ("before", "start", "end", "after"):
        window = result["windows"][name]
        assert set(window) >= MEASURES, (name, window)
        assert window["probe_failures"] == 0
        assert window["redis_connections"] >= 1 and window["fds"] > 0 and window["rss_mib"] > 0
    assert set(result["growth"]) == MEASURES
    assert isinstance(result["leak_suspected"], bool)
    assert set(result["pids"]) == {"sidecar", "engine", "redis", "load"}
    for pid in result["pids"].values():  # every process the soak started was stopped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
