"""`python -m bench.profile_sidecar`: where the sidecar's CPU goes per request, sampled by py-spy under load.

Starts the bench engine, a redis-server (or `--memory`) and the sidecar, runs the closed-loop load against it
while `py-spy record` samples the sidecar's PID, then prints the heaviest frames: self time by function and
inclusive time by sidecar function. Raw collapsed stacks are kept for flame graphs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from .processes import RedisServer, free_port, python_module, started
from .proxy_bench import FULL, run_load, sidecar

RESULTS = Path(__file__).parent / "results"


def py_spy() -> str:
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return found


def summarise_stacks(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares from py-spy's raw (collapsed) output."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_time[frames[-1]] += count
        for frame in set(frames):
            if "sidecar/" in frame or "aiohttp/" in frame or "redis/" in frame:
                inclusive[frame] += count
    if not total:
        return "no samples"
    by_package: Counter[str] = Counter()
    for frame, n in self_time.items():
        by_package[_package(frame)] += n
    lines = [f"{total} samples", "", "self time by package (the leaf frame's file):"]
    lines += [f"  {100 * n / total:5.1f}%  {package}" for package, n in by_package.most_common()]
    lines += ["", "self time (leaf frames):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in self_time.most_common(top)]
    lines += ["", "inclusive time (sidecar, aiohttp and redis frames):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _package(frame: str) -> str:
    where = frame.rpartition("(")[2]
    if frame.startswith("run_app "):
        return "event loop itself (uvloop: epoll, recv, callbacks in C)"
    if "sidecar/" in where:
        return "sidecar (our code; orjson and hashlib C calls count here too)"
    if "aiohttp/" in where:
        return "aiohttp (HTTP parse/serialise; socket send() syscalls count here)"
    if "redis/" in where:
        return "redis-py (command packing, pool; socket send() counts under asyncio)"
    if "asyncio/" in where:
        return "asyncio (streams, timeouts; redis-py's socket send() counts here)"
    return "other (stdlib, yarl, multidict)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--memory", action="store_true", help="sidecar on memory:// instead of redis-server")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=RESULTS / "sidecar-profile.txt")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    raw = args.out.with_suffix(".collapsed")
    with ExitStack() as stack:
        port = free_port()
        engine = stack.enter_context(
            started("engine", python_module("bench.engine", "--port", str(port), "--deltas", "8"), port)
        )
        redis_url = "memory://" if args.memory else stack.enter_context(RedisServer()).url
        proxy = stack.enter_context(sidecar(engine.url, redis_url))
        run_load(proxy.url, args.stream, args.concurrency, FULL)  # warm, unprofiled
        spy = subprocess.Popen(
            [py_spy(), "record", "--pid", str(proxy.pid), "--rate", str(args.rate), "--format", "raw",
             "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            result: dict[str, object] = {}
            worker = threading.Thread(
                target=lambda: result.update(run_load(proxy.url, args.stream, args.concurrency, FULL))
            )
            worker.start()
            worker.join()
        finally:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            _, err = spy.communicate(timeout=60)
        if spy.returncode not in (0, -2) and not raw.exists():
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')}")
    summary = summarise_stacks(raw)
    args.out.write_text(summary + "\n")
    print(summary)
    print(f"wrote {args.out} and {raw}")


if __name__ == "__main__":
    main()
