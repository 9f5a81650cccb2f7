"""`python -m bench fuzz`: 10,000+ fuzzed requests per store backend, a table of what each route answered.

The strategies, the judge and the store model are the CI slice's (tests/fuzz/): every stateful route gets
bad bodies and headers; no answer may be a 5xx, every error is the OpenAI error body, and afterwards the
store holds exactly what the accepted requests wrote. Exits 1 if anything failed.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fixtures.redis_servers import RedisServer
from tests.fuzz.bad_requests import FuzzRequest, any_request
from tests.fuzz.harness import FuzzTarget, table

BATCH = 8  # requests per hypothesis example, at most


def fuzz_backend(url: str, requests: int) -> tuple[FuzzTarget, float]:
    """Send at least `requests` fuzzed requests to a fresh sidecar on `url`; the target (tally, failures,
    model) and the seconds it took."""
    target = FuzzTarget(url, fail_fast=False)
    started = time.perf_counter()

    def sent() -> int:
        return sum(t.requests for t in target.tally.values())

    while sent() < requests:
        # Batches average half of BATCH; a little over the examples that needs, then top up if short.
        examples = max(10, int((requests - sent()) / (BATCH / 2) * 1.1))

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(any_request, min_size=1, max_size=BATCH))
        def fuzz(batch: list[FuzzRequest]) -> None:
            if sent() < requests:
                target.send(batch)

        fuzz()
    return target, time.perf_counter() - started


def run(*, requests: int, backends: list[str], out: Path | None) -> int:
    report: dict[str, Any] = {"kind": "fuzz", "requests_per_backend": requests, "backends": {}}
    failed = False
    with ExitStack() as stack:
        for backend in backends:
            url = "memory://"
            if backend == "redis":
                url = stack.enter_context(RedisServer()).url
            target, seconds = fuzz_backend(url, requests)
            try:
                mismatches = target.mismatches()
            finally:
                target.close()
            total = sum(t.requests for t in target.tally.values())
            print(f"\n## {backend}: {total} requests in {seconds:.1f} s\n")
            print(table(target.tally))
            for failure in target.failures[:10]:
                print(f"\nFAILED: {failure[:2000]}")
            for mismatch in mismatches[:20]:
                print(f"\nSTORE MISMATCH: {mismatch}")
            print(
                f"\n{len(target.failures)} failed answers, {len(mismatches)} store mismatches, "
                f"{len(target.model.conversations)} conversations and "
                f"{sum(r.live for r in target.model.responses.values())} responses stored as the model says"
            )
            failed = failed or bool(target.failures or mismatches)
            report["backends"][backend] = {
                "requests": total,
                "seconds": round(seconds, 2),
                "routes": {
                    route: {"requests": t.requests, "statuses": dict(t.statuses), "seconds": t.seconds}
                    for route, t in sorted(target.tally.items())
                },
                "failures": target.failures[:50],
                "store_mismatches": mismatches[:50],
            }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return 1 if failed else 0


def main(*, quick: bool, requests: int | None, backends: str, out: Path | None) -> None:
    count = requests or (400 if quick else 10_000)
    sys.exit(run(requests=count, backends=backends.split(","), out=out))
