"""Summaries, the printed table and the JSON file: percentiles, rps, and ratios against the pass-through."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

# The proxy's performance targets (bench/README.md), checked on every run: ratios within one run, never
# absolute times from elsewhere.
ADDED_P50_SLACK_MS = 0.5  # non-stream at concurrency 1 (raw and SDK): added p50 <= pass-through's + this
TTFB_SLACK_MS = 0.4  # stream time to first byte at concurrency 1: added p50 <= pass-through's + this
ADDED_P99_MAX_MS = 4.0  # at concurrency 16
RPS_RATIO_MIN = 0.6  # at concurrency 16, against the pass-through
STATEFUL_TARGET = "sidecar-redis"
DISTURBED_CORES = 0.15


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarise(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "mean": sum(ordered) / len(ordered) if ordered else math.nan,
    }


def machine() -> dict[str, Any]:
    import os

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def add_ratios(runs: list[dict[str, Any]]) -> None:
    """Added latency (against the engine answering directly) and throughput ratio (against the pass-through),
    per scenario, each within this run."""
    by_key = {(r["target"], r["scenario"]): r for r in runs}
    for run in runs:
        direct = by_key.get(("direct", run["scenario"]))
        floor = by_key.get(("passthrough", run["scenario"]))
        if direct is not None:
            run["added_p50_ms"] = run["latency_ms"]["p50"] - direct["latency_ms"]["p50"]
            run["added_p99_ms"] = run["latency_ms"]["p99"] - direct["latency_ms"]["p99"]
    for run in runs:
        floor = by_key.get(("passthrough", run["scenario"]))
        if floor is not None and "added_p50_ms" in floor and "added_p50_ms" in run:
            run["added_p50_over_passthrough_ms"] = run["added_p50_ms"] - floor["added_p50_ms"]
        if floor is not None and floor["rps"]:
            run["rps_vs_passthrough"] = run["rps"] / floor["rps"]


def check_targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for run in runs:
        if run["target"] != STATEFUL_TARGET:
            continue
        label = f"{run['target']} {run['scenario']}"
        if run["concurrency"] == 1 and "added_p50_over_passthrough_ms" in run:
            slack = TTFB_SLACK_MS if run["stream"] else ADDED_P50_SLACK_MS
            checks.append(
                {
                    "target": f"{label}: added p50 <= pass-through added p50 + {slack} ms",
                    "value": run["added_p50_over_passthrough_ms"],
                    "ok": run["added_p50_over_passthrough_ms"] <= slack,
                }
            )
        if run["concurrency"] >= 16 and "added_p99_ms" in run:
            checks.append(
                {
                    "target": f"{label}: added p99 <= {ADDED_P99_MAX_MS} ms",
                    "value": run["added_p99_ms"],
                    "ok": run["added_p99_ms"] <= ADDED_P99_MAX_MS,
                }
            )
        if run["concurrency"] >= 16 and "rps_vs_passthrough" in run:
            checks.append(
                {
                    "target": f"{label}: rps >= {RPS_RATIO_MIN} x pass-through",
                    "value": run["rps_vs_passthrough"],
                    "ok": run["rps_vs_passthrough"] >= RPS_RATIO_MIN,
                }
            )
    return checks


def proxy_table(runs: list[dict[str, Any]]) -> str:
    header = (
        "target",
        "scenario",
        "n",
        "err",
        "p50",
        "p95",
        "p99",
        "rps",
        "+p50",
        "+p99",
        "+p50-pt",
        "rps/pt",
        "cpu/req",
        "other",
    )
    rows = [header]
    for r in runs:
        lat = r["latency_ms"]
        rows.append(
            (
                r["target"],
                r["scenario"],
                str(r["count"]),
                str(r["errors"]),
                _fmt(lat["p50"]),
                _fmt(lat["p95"]),
                _fmt(lat["p99"]),
                _fmt(r["rps"], 0),
                _fmt(r.get("added_p50_ms")),
                _fmt(r.get("added_p99_ms")),
                _fmt(r.get("added_p50_over_passthrough_ms")),
                _fmt(r.get("rps_vs_passthrough"), 2),
                _fmt(r.get("proxy_cpu_us_per_request"), 0),
                _fmt(r.get("other_cores"), 2) + ("!" if r.get("other_cores", 0) > DISTURBED_CORES else ""),
            )
        )
    return _render(rows) + (
        "\nms; scenario = nonstream (full response) | stream-ttfb (first body byte) @ concurrency; "
        "+p50/+p99 = minus direct-to-engine; +p50-pt = minus pass-through's +p50; "
        "rps/pt = rps / pass-through's;\ncpu/req = proxy CPU us per request; other = cores used by processes "
        f"outside the benchmark during the run ('!' above {DISTURBED_CORES}: a neighbour disturbed it)"
    )


def checks_table(checks: list[dict[str, Any]]) -> str:
    return "\n".join(f"  [{'ok' if c['ok'] else 'MISS'}] {c['target']}: {_fmt(c['value'])}" for c in checks)


def _render(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def kv_table(pairs: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in pairs)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
