"""`python -m bench sweep`: the sidecar's cost against the conversation's length, so a user sees how it grows.

Starts the bench engine, a redis-server and the sidecar (one worker). For each history (1, 20 and 100 turns of
~200-byte inputs, and 100 turns of ~3.6 KB inputs: ~400 KB, ~100,000 tokens) it builds the conversation
through the sidecar, then times, one request at a time on keep-alive connections and interleaved:

- `direct`: the engine given the whole history in `input` (what a stateless client sends itself);
- `sidecar`: the sidecar given only the new input and `previous_response_id` of the history's last response
  (each call branches from the same response, so every call resolves the same history and stores a turn).

Added latency is the sidecar's p50 minus direct's; CPU per request is the sidecar's own (from
/proc/PID/schedstat, nanoseconds, read between calls). The history's bytes are what the sidecar splices into
the engine's request; its CPU should grow no faster than they do.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .processes import RedisServer, free_port, python_module, started
from .proxy_bench import ENGINE_DELTAS, sidecar
from .report import machine, summarise, write_json
from .session_resolve import Client

RESULTS = Path(__file__).parent / "results"
_WORDS = "the conversation goes on about state history and the engine that never keeps any of it "


@dataclass(frozen=True)
class History:
    name: str
    turns: int
    input_bytes: int


HISTORIES = (
    History("1 turn", 1, 200),
    History("20 turns", 20, 200),
    History("100 turns", 100, 200),
    History("~100k tokens", 100, 3600),
)


def text(size: int, turn: int) -> str:
    return (f"{turn}: " + _WORDS * (size // len(_WORDS) + 1))[:size]


def cpu_ns(pid: int) -> int:
    """Nanoseconds the process has run on a CPU (schedstat's first field): exact, where /proc has ticks."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def post(client: Client, body: dict[str, Any] | bytes) -> tuple[dict[str, Any], float]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    status, answer, seconds = client.request("POST", "/v1/responses", data)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {answer[:300]!r}")
    return orjson.loads(answer), seconds


def build(client: Client, history: History) -> str:
    """The history, chained through the sidecar; the id of its last response."""
    previous: str | None = None
    for turn in range(history.turns):
        body: dict[str, Any] = {"model": "bench-model", "input": text(history.input_bytes, turn)}
        if previous is not None:
            body["previous_response_id"] = previous
        previous = str(post(client, body)[0]["id"])
    assert previous is not None
    return previous


def stored_items(client: Client, head: str) -> list[Any]:
    """The history's items as stored (the session API splices their bytes; no re-encoding)."""
    status, data, _ = client.request("GET", f"/v1/sessions/resolve?previous_response_id={head}")
    if status != 200:
        raise RuntimeError(f"resolve: HTTP {status}: {data[:300]!r}")
    conversation = orjson.loads(data)["conversation_id"]
    status, data, _ = client.request("GET", f"/v1/sessions/{conversation}")
    if status != 200:
        raise RuntimeError(f"session: HTTP {status}: {data[:300]!r}")
    return list(orjson.loads(data)["items"])


def measure(direct: Client, proxy: Client, proxy_pid: int, history: History, samples: int) -> dict[str, Any]:
    head = build(proxy, history)
    items = stored_items(proxy, head)
    history_bytes = len(orjson.dumps(items))
    new_input = text(200, history.turns)
    direct_body = orjson.dumps(
        {"model": "bench-model", "input": [*items, {"role": "user", "content": new_input}]}
    )
    proxy_body = orjson.dumps({"model": "bench-model", "input": new_input, "previous_response_id": head})
    timings: dict[str, list[float]] = {"direct": [], "sidecar": []}
    cpu = 0
    for n in range(samples + max(3, samples // 10)):  # the first tenth warms up, untimed
        _, direct_s = post(direct, direct_body)
        before = cpu_ns(proxy_pid)
        _, proxy_s = post(proxy, proxy_body)
        if n >= max(3, samples // 10):
            cpu += cpu_ns(proxy_pid) - before
            timings["direct"].append(direct_s * 1000)
            timings["sidecar"].append(proxy_s * 1000)
    direct_ms, proxy_ms = summarise(timings["direct"]), summarise(timings["sidecar"])
    return {
        "history": history.name,
        "turns": history.turns,
        "items": len(items),
        "history_bytes": history_bytes,
        "estimated_tokens": history_bytes // 4,
        "samples": samples,
        "direct_ms": direct_ms,
        "sidecar_ms": proxy_ms,
        "added_p50_ms": proxy_ms["p50"] - direct_ms["p50"],
        "sidecar_cpu_us_per_request": cpu / samples / 1000,
    }


def add_growth(rows: list[dict[str, Any]]) -> None:
    """CPU per added KB of history, from the shortest history: the cost of splicing bytes."""
    base = rows[0]
    for row in rows[1:]:
        extra_kb = (row["history_bytes"] - base["history_bytes"]) / 1000
        extra_cpu = row["sidecar_cpu_us_per_request"] - base["sidecar_cpu_us_per_request"]
        row["cpu_us_per_extra_kb"] = extra_cpu / extra_kb if extra_kb > 0 else None


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| history | items | history KB | direct p50 ms | sidecar p50 ms | +p50 ms | sidecar CPU µs/req "
        "| CPU µs per extra KB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        per_kb = row.get("cpu_us_per_extra_kb")
        lines.append(
            f"| {row['history']} | {row['items']} | {row['history_bytes'] / 1000:,.1f} "
            f"| {row['direct_ms']['p50']:.3f} | {row['sidecar_ms']['p50']:.3f} | {row['added_p50_ms']:+.3f} "
            f"| {row['sidecar_cpu_us_per_request']:,.0f} | {'-' if per_kb is None else f'{per_kb:.2f}'} |"
        )
    return "\n".join(lines)


def run(*, quick: bool, out: Path, samples: int | None = None) -> dict[str, Any]:
    samples = samples or (20 if quick else 400)
    started_at = time.monotonic()
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        port = free_port()
        argv = python_module("bench.engine", "--port", str(port), "--deltas", str(ENGINE_DELTAS))
        engine = stack.enter_context(started("engine", argv, port))
        redis = stack.enter_context(RedisServer())
        proxy = stack.enter_context(sidecar(engine.url, redis.url))
        direct_client, proxy_client = Client(engine.port), Client(proxy.port)
        for history in HISTORIES:
            rows.append(measure(direct_client, proxy_client, proxy.pid, history, samples))
            row = rows[-1]
            print(
                f"  {history.name:13s} {row['history_bytes']:8d} B  +p50={row['added_p50_ms']:+.3f} ms  "
                f"sidecar cpu/req={row['sidecar_cpu_us_per_request']:.0f} us",
                file=sys.stderr,
                flush=True,
            )
    add_growth(rows)
    result = {
        "kind": "sweep",
        "quick": quick,
        "machine": machine(),
        "rows": rows,
        "wall_seconds": time.monotonic() - started_at,
    }
    write_json(out, result)
    print(table(rows))
    print(f"wrote {out}", file=sys.stderr)
    return result
