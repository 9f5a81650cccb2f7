"""`python -m bench.ab --before REV [--after REV]`: two versions of the sidecar side by side, called in turn.

On a shared machine absolute times move with the neighbours; a change is judged by running the code before and
after it in the same invocation. Each side is a `git archive` of its revision (the working tree is never
touched) served by its own sidecar process on its own redis-server, both in front of one bench engine. Round
after round, each side gets the same calls: healthz, a session-API resolve of a 50-turn conversation, an
append, and a chained `/v1/responses` turn (non-stream, ~200-byte input, 20 turns a conversation). Latency is
per call; CPU per call is the sidecar's own, from /proc/PID/schedstat read around the call.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson

from tests.fixtures.redis_servers import spawn_process, stop_process

from .load import input_text
from .processes import LOG_DIR, RedisServer, free_port, python_module, started, wait_for_port
from .proxy_bench import ENGINE_DELTAS
from .report import summarise, write_json
from .session_resolve import _TEXT, Client, write_conversation
from .sweep import cpu_ns

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CALLS = ("healthz", "resolve", "append", "responses")
TURNS = 20


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """`rev`'s tree in a temporary directory (`git archive`: no index, no work tree involved)."""
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as where:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", where], input=archive.stdout, check=True)
        yield Path(where)


@contextmanager
def serve(tree: Path, engine_url: str, redis_url: str, name: str) -> Iterator[tuple[int, int]]:
    """The sidecar of `tree` (its package first on the path: `python -m` from there); (pid, port)."""
    port = free_port()
    argv = [sys.executable, "-m", "sidecar", "serve", "--listen", f"127.0.0.1:{port}"]
    argv += ["--upstream", engine_url, "--upstream-api", "responses", "--redis-url", redis_url]
    argv += ["--log-level", "warning"]
    if "--workers" in (tree / "sidecar" / "cli.py").read_text():  # revisions before --workers ran one process
        argv += ["--workers", "1"]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"ab-{name}-{port}.log"
    proc = spawn_process(argv, cwd=tree, log_path=log_path)
    try:
        wait_for_port(port, 30, alive=lambda: proc.poll() is None)
        if proc.poll() is not None:
            raise RuntimeError(f"the {name} sidecar exited:\n{log_path.read_text(errors='replace')[-2000:]}")
        yield proc.pid, port
    finally:
        stop_process(proc)


class Side:
    """One version's sidecar and a keep-alive connection to it, with the state its calls chain on."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid = pid
        self.client = Client(port)
        self.head = write_conversation(self.client, "conv_ab_resolve", 50)
        self.previous: str | None = None
        self.turn = 0
        self.latency: dict[str, list[float]] = {call: [] for call in CALLS}
        self.cpu_ns: dict[str, int] = dict.fromkeys(CALLS, 0)

    def request(self, call: str, text: str) -> tuple[str, str, bytes]:
        if call == "healthz":
            return "GET", "/convostore/healthz", b""
        if call == "resolve":
            return "GET", f"/v1/sessions/resolve?previous_response_id={self.head}", b""
        if call == "append":
            return (
                "POST",
                "/v1/sessions/conv_ab_append/append",
                orjson.dumps({"role": "user", "content": _TEXT}),
            )
        body: dict[str, Any] = {"model": "bench-model", "input": text}
        if self.turn % TURNS and self.previous is not None:
            body["previous_response_id"] = self.previous
        return "POST", "/v1/responses", orjson.dumps(body)

    def call(self, call: str, text: str, timed: bool) -> None:
        method, path, body = self.request(call, text)
        before = cpu_ns(self.pid)
        status, data, seconds = self.client.request(method, path, body)
        used = cpu_ns(self.pid) - before
        if status != 200:
            raise RuntimeError(f"{call}: HTTP {status}: {data[:300]!r}")
        if call == "responses":
            self.previous, self.turn = str(orjson.loads(data)["id"]), self.turn + 1
        if timed:
            self.latency[call].append(seconds * 1000)
            self.cpu_ns[call] += used


def run(before: str, after: str, samples: int, out: Path) -> dict[str, Any]:
    rng = random.Random(1)
    with ExitStack() as stack:
        trees = {
            "before": stack.enter_context(checkout(before)),
            "after": stack.enter_context(checkout(after)),
        }
        port = free_port()
        argv = python_module("bench.engine", "--port", str(port), "--deltas", str(ENGINE_DELTAS))
        engine = stack.enter_context(started("engine", argv, port))
        sides: dict[str, Side] = {}
        for name, tree in trees.items():
            redis = stack.enter_context(RedisServer())
            pid, side_port = stack.enter_context(serve(tree, engine.url, redis.url, name))
            sides[name] = Side(pid, side_port)
        warm = max(50, samples // 10)
        for n in range(warm + samples):
            text = input_text(rng, 200)
            order = list(sides.values()) if n % 2 else list(sides.values())[::-1]  # neither always first
            for call in CALLS:
                for side in order:
                    side.call(call, text, timed=n >= warm)
    rows = []
    for call in CALLS:
        row: dict[str, Any] = {"call": call}
        for name, side in sides.items():
            row[name] = {
                **summarise(side.latency[call]),
                "cpu_us": side.cpu_ns[call] / len(side.latency[call]) / 1000,
            }
        rows.append(row)
    result = {"kind": "ab", "before": before, "after": after, "samples": samples, "rows": rows}
    write_json(out, result)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"before = {result['before']}, after = {result['after']}, {result['samples']} calls each, alternated:"
    )
    print(f"  {'call':10s} {'p50 before':>11s} {'p50 after':>10s} {'Δ ms':>8s} {'CPU before':>11s} "
          f"{'CPU after':>10s} {'Δ µs':>7s}")  # fmt: skip
    for row in result["rows"]:
        b, a = row["before"], row["after"]
        print(
            f"  {row['call']:10s} {b['p50']:11.3f} {a['p50']:10.3f} {a['p50'] - b['p50']:+8.3f} "
            f"{b['cpu_us']:11.0f} {a['cpu_us']:10.0f} {a['cpu_us'] - b['cpu_us']:+7.0f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before", required=True, help="git revision of the code before the change")
    parser.add_argument("--after", default="HEAD", help="git revision after it (default HEAD)")
    parser.add_argument("--samples", type=int, default=2000, help="timed rounds")
    parser.add_argument("--out", type=Path, default=RESULTS / "ab.json")
    args = parser.parse_args(argv)
    print_table(run(args.before, args.after, args.samples, args.out))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
