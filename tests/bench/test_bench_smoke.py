"""`python -m bench --quick` and `python -m bench store --quick` run end to end and write well-formed JSON.

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
SCENARIOS = {"nonstream@1", "stream-ttfb@1", "nonstream-sdk@1", "nonstream@16", "stream-ttfb@16"}


def run_bench(*args: str, module: str = "bench", timeout: float = 240) -> None:
    """`python -m <module> <args>` from the repository's root; its stderr's tail when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]


@pytest.mark.timeout(300)
def test_proxy_bench_quick_writes_every_target_and_scenario(tmp_path: Path) -> None:
    out = tmp_path / "proxy.json"
    run_bench("--quick", "--no-smg", "--out", str(out))
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    assert result["kind"] == "proxy" and result["quick"] is True
    runs = result["runs"]
    targets = {"direct", "passthrough", "sidecar-memory", "sidecar-redis", "sidecar-redis-2w"}
    assert {(r["target"], r["scenario"]) for r in runs} == {(t, s) for t in targets for s in SCENARIOS}
    for run in runs:
        assert run["errors"] == 0, run["first_error"]
        assert run["count"] > 0 and run["rps"] > 0
        assert set(run["latency_ms"]) >= {"p50", "p95", "p99"}
        if run["target"] != "direct":
            assert {"added_p50_ms", "added_p99_ms", "rps_vs_passthrough"} <= set(run)
    for run in (r for r in runs if r["target"] in ("sidecar-redis", "sidecar-redis-2w")):
        # one resolve per chained request and one append per request, each a single EVALSHA (a fresh process's
        # first call of a script is refused NOSCRIPT once, loaded and retried: that pair is not a turn's cost;
        # with two workers, each loads its scripts once)
        stats = run["redis_commands"]
        # The background-run reapers poll once a second each (due_runs-1.lua, its one ZRANGEBYSCORE per call).
        evalsha = stats["evalsha"] - stats.get("script|load", 0) - stats.get("zrangebyscore", 0)
        assert evalsha == run["requests_sent"] + run["requests_chained"], stats
    assert result["targets"] and all({"target", "value", "ok"} <= set(c) for c in result["targets"])
    assert any("SMG skipped" in note for note in result["notes"])


@pytest.mark.timeout(300)
def test_store_bench_quick_reports_latency_round_trips_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "store.json"
    run_bench("store", "--quick", "--out", str(out))
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    assert result["kind"] == "store"
    population = result["population"]
    assert population["conversations_loaded"] > 0
    loaded = population["conversations_loaded"] * population["turns_per_conversation"]
    assert population["turns_loaded"] == loaded
    operations = {op["operation"]: op for op in result["operations"]}
    assert any(name.startswith("resolve depth 1") for name in operations)
    assert any(name.startswith("resolve branch") for name in operations)
    assert "append chained at head" in operations
    for op in operations.values():
        assert op["count"] > 0 and set(op["latency_ms"]) >= {"p50", "p95", "p99"}
        assert op["client_commands"] == ["evalsha"], op
    memory = result["memory"]
    assert memory["bytes_per_turn"] > 0 and memory["payload_bytes_per_turn"] > 0
    assert memory["by_key_kind"]
    assert result["sizing_1m_sessions"]["masters"] >= 3
