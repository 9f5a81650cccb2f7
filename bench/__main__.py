"""`python -m bench [--quick]` (proxies under load), `python -m bench store [--quick]` (the Store API) and
`python -m bench soak [--quick]` (the sidecar on Redis under long load: RSS, fds, connections, loop lag) and
`python -m bench fuzz [--quick]` (10,000+ fuzzed requests per store backend: never a 5xx, the store exact) and
`python -m bench apc [--quick]` (llama.cpp's prefix cache reuse: full history, trimming, a naive window) and
`python -m bench sweep [--quick]` (added latency and sidecar CPU against the history's length)."""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run for CI (< 30 s)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/proxy.json or store.json)")
    parser.add_argument("--no-smg", action="store_true", help="skip SMG even when installed")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="seconds each run may wait for other load to stop"
    )
    parser.add_argument(
        "--only",
        help="comma-separated targets to run (direct, passthrough, sidecar-memory, sidecar-redis, "
        "sidecar-redis-2w, smg-redis)",
    )
    parser.add_argument(
        "--scenarios", help="comma-separated scenarios to run (nonstream@1, stream-ttfb@1, nonstream@16, ...)"
    )
    commands = parser.add_subparsers(dest="command")
    store = commands.add_parser("store", help="Store API latency, round trips and Redis memory per turn")
    store.add_argument("--quick", action="store_true", dest="store_quick")
    store.add_argument("--out", type=Path, dest="store_out")
    store.add_argument("--conversations", type=int, help="preloaded population (default 100000; quick 200)")
    store.add_argument("--turns", type=int, default=50, help="turns per preloaded conversation")
    store.add_argument("--preload-seconds", type=float, help="stop preloading after this long (default 240)")
    store.add_argument("--samples", type=int, help="timed operations per measurement (default 5000)")
    soak = commands.add_parser("soak", help="long bounded load on Redis: RSS, fds, connections, loop lag")
    soak.add_argument("--quick", action="store_true", dest="soak_quick", help="a few hundred requests")
    soak.add_argument("--out", type=Path, dest="soak_out", help="JSON path (default bench/results/soak.json)")
    soak.add_argument("--requests", type=int, help="requests in all, warm-up included (default 200000)")
    soak.add_argument("--seconds", type=float, help="stop after this long even if requests remain")
    soak.add_argument("--concurrency", type=int, help="clients, each chaining conversations (default 32)")
    fuzz = commands.add_parser("fuzz", help="fuzzed bodies and headers on every stateful route, per backend")
    fuzz.add_argument("--quick", action="store_true", dest="fuzz_quick", help="400 requests per backend")
    fuzz.add_argument("--out", type=Path, dest="fuzz_out", help="JSON path (default bench/results/fuzz.json)")
    fuzz.add_argument("--requests", type=int, help="requests per backend (default 10000)")
    fuzz.add_argument("--backends", default="memory,redis", help="comma-separated: memory, redis")
    sweep = commands.add_parser("sweep", help="added latency and sidecar CPU against the history's length")
    sweep.add_argument("--quick", action="store_true", dest="sweep_quick", help="20 calls per history")
    sweep.add_argument("--out", type=Path, dest="sweep_out", help="JSON (default bench/results/sweep.json)")
    sweep.add_argument("--samples", type=int, dest="sweep_samples", help="timed calls per history (400)")
    apc = commands.add_parser("apc", help="llama.cpp prefix reuse: full history, trimming, a naive window")
    apc.add_argument("--quick", action="store_true", dest="apc_quick", help="9 turns: one fold")
    apc.add_argument("--out", type=Path, dest="apc_out", help="JSON path (default bench/results/apc.json)")
    apc.add_argument("--turns", type=int, help="chained turns per configuration (default 18)")
    apc.add_argument("--swa-full", action="store_true", help="llama.cpp keeps the full sliding-window cache")
    args = parser.parse_args(argv)
    if args.command == "apc":
        from .apc import run as run_apc

        quick = args.quick or args.apc_quick
        out = args.apc_out or args.out or RESULTS / ("apc-swa-full.json" if args.swa_full else "apc.json")
        run_apc(quick=quick, out=out, turns=args.turns, swa_full=args.swa_full)
        return
    if args.command == "sweep":
        from .sweep import run as run_sweep

        quick = args.quick or args.sweep_quick
        out = args.sweep_out or args.out or RESULTS / "sweep.json"
        run_sweep(quick=quick, out=out, samples=args.sweep_samples)
        return
    if args.command == "fuzz":
        from .fuzz import main as run_fuzz

        run_fuzz(
            quick=args.quick or args.fuzz_quick,
            requests=args.requests,
            backends=args.backends,
            out=args.fuzz_out or args.out or RESULTS / "fuzz.json",
        )
        return
    if args.command == "soak":
        from .soak import bounds_from
        from .soak import run as run_soak

        quick = args.quick or args.soak_quick
        bounds = bounds_from(
            quick=quick, requests=args.requests, seconds=args.seconds, concurrency=args.concurrency
        )
        run_soak(bounds, args.soak_out or args.out or RESULTS / "soak.json", quick=quick)
        return
    if args.command == "store":
        from .store_bench import run as run_store

        quick = args.quick or args.store_quick
        run_store(
            quick=quick,
            out=args.store_out or args.out or RESULTS / "store.json",
            conversations=args.conversations,
            turns=args.turns,
            preload_seconds=args.preload_seconds,
            samples=args.samples,
        )
        return
    from .proxy_bench import run as run_proxy

    run_proxy(
        quick=args.quick,
        with_smg=not args.no_smg,
        out=args.out or RESULTS / "proxy.json",
        quiet_wait_s=args.quiet_wait,
        only=frozenset(args.only.split(",")) if args.only else None,
        scenarios=frozenset(args.scenarios.split(",")) if args.scenarios else None,
    )


if __name__ == "__main__":
    main()
