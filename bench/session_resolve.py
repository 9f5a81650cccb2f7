"""`python -m bench.session_resolve`: the session API's own cost — resolve of a 50-turn
conversation and append, each as p50 over the same server's `/convostore/healthz`.

Starts a redis-server and the sidecar (one worker; no engine is needed), writes a conversation of `--turns`
turns (a ~200-byte user message appended, a ~200-byte assistant message stored: two items a turn), then
times, on one keep-alive connection, healthz / resolve-by-response / resolve-by-conversation / append
interleaved so that drift hits them all alike. `--profile` samples the sidecar with py-spy while it
resolves, and prints the heaviest frames (bench/profile_sidecar.py's summary).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from .processes import RedisServer
from .proxy_bench import sidecar
from .report import summarise

RESULTS = Path(__file__).parent / "results"
_TEXT = "the conversation goes on about state, history and the engine that never keeps any " * 3


class Client:
    """One blocking keep-alive HTTP/1.1 connection: as little client work as a request can take."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes, float]:
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        started = time.perf_counter()
        self.sock.sendall(
            head.encode() + (b"Content-Type: application/json\r\n\r\n" if body else b"\r\n") + body
        )
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        header, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, data, time.perf_counter() - started

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the sidecar closed the connection")
        return chunk

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, data, _ = self.request(method, path, b"" if body is None else orjson.dumps(body))
        if status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:300]!r}")
        return orjson.loads(data)


def write_conversation(client: Client, conversation: str, turns: int) -> str:
    """`turns` user/assistant pairs; the id of the last stored response."""
    last = ""
    for turn in range(turns):
        message = {"role": "user", "content": f"{turn}: {_TEXT}"[:200]}
        client.json("POST", f"/v1/sessions/{conversation}/append", message)
        answer = {"message": {"role": "assistant", "content": f"answer {turn}: {_TEXT}"[:200]}}
        last = client.json("POST", f"/v1/sessions/{conversation}/store_response", answer)["response_id"]
    return last


def measure(client: Client, paths: dict[str, tuple[str, str, bytes]], samples: int) -> dict[str, Any]:
    timings: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(samples):
        for name, (method, path, body) in paths.items():
            status, data, seconds = client.request(method, path, body)
            if status != 200:
                raise RuntimeError(f"{name}: HTTP {status}: {data[:300]!r}")
            timings[name].append(seconds * 1000)
    summary = {name: summarise(values) for name, values in timings.items()}
    floor = summary["healthz"]["p50"]
    return {name: {**values, "p50_over_healthz": values["p50"] - floor} for name, values in summary.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--samples", type=int, default=3000, help="timed calls of each kind")
    parser.add_argument("--profile", action="store_true", help="py-spy the sidecar while it resolves")
    parser.add_argument("--out", type=Path, default=RESULTS / "session_resolve.json")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)  # py-spy writes beside it
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        proxy = stack.enter_context(sidecar("http://127.0.0.1:9", redis.url))
        client = Client(proxy.port)
        last = write_conversation(client, "conv_bench_resolve", args.turns)
        size = len(client.request("GET", f"/v1/sessions/resolve?previous_response_id={last}")[1])
        append = orjson.dumps({"role": "user", "content": _TEXT[:200]})
        paths = {
            "healthz": ("GET", "/convostore/healthz", b""),
            "resolve_response": ("GET", f"/v1/sessions/resolve?previous_response_id={last}", b""),
            "resolve_conversation": ("GET", "/v1/sessions/resolve?conversation_id=conv_bench_resolve", b""),
            # a conversation of its own, so the resolves above keep their 50 turns
            "append": ("POST", "/v1/sessions/conv_bench_append/append", append),
        }
        measure(client, paths, max(200, args.samples // 10))  # warm-up
        if args.profile:
            from .profile_sidecar import py_spy, summarise_stacks

            raw = args.out.with_suffix(".collapsed")
            spy = subprocess.Popen(
                [py_spy(), "record", "--pid", str(proxy.pid), "--rate", "500", "--format", "raw",
                 "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(1.0)
            try:
                resolve = {"resolve_response": paths["resolve_response"], "healthz": paths["healthz"]}
                measure(client, resolve, args.samples)
            finally:
                spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
                _, err = spy.communicate(timeout=60)
            if not raw.exists():
                raise SystemExit(f"py-spy failed: {err.decode(errors='replace')}")
            print(summarise_stacks(raw, top=40))
        result = {
            "turns": args.turns,
            "items": 2 * args.turns,
            "resolve_body_bytes": size,
            "samples": args.samples,
            "ms": measure(client, paths, args.samples),
        }
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"session API, {args.turns}-turn conversation ({size} bytes resolved), {args.samples} calls each:")
    print(f"  {'call':22s} {'p50':>7s} {'p99':>7s} {'p50 over healthz':>17s}")
    for name, values in result["ms"].items():
        print(f"  {name:22s} {values['p50']:7.3f} {values['p99']:7.3f} {values['p50_over_healthz']:+17.3f}")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
