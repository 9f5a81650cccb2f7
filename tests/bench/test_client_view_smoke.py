"""`python -m bench.client_view` runs every client against the engine, the pass-through and the sidecar.

Shape only: timings on a shared 2-core machine are never asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.bench.test_bench_smoke import run_bench


@pytest.mark.timeout(300)
def test_client_view_times_every_client_on_every_target(tmp_path: Path) -> None:
    out = tmp_path / "client_view.json"
    run_bench("--requests", "20", "--out", str(out), module="bench.client_view")
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    assert result["kind"] == "client_view"
    table = result["results"]
    assert {"bench-raw", "openai-sdk", "new-connection", "httpx"} <= set(table)
    for row in table.values():
        assert set(row) == {"direct", "passthrough", "sidecar-redis"}
        assert row["direct"]["added_p50"] == 0
        for cell in row.values():
            assert cell["p50"] > 0 and cell["client_cpu_us"] >= 0 and cell["server_cpu_us"] > 0
        # the sidecar answers with the complete response object, the engine with its own
        assert row["sidecar-redis"]["answer_bytes"] > row["direct"]["answer_bytes"]
