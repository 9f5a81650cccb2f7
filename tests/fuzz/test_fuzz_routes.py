"""A short fuzz slice in CI: bad bodies and headers on every stateful route, on memory and on a real Redis.

Never a 5xx, always the OpenAI error body (with `param` on a 400 about one field), and afterwards the store
holds exactly what the accepted requests wrote. `python -m bench fuzz` runs the same for 10,000+ bodies.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sidecar.app import create_app
from sidecar.config import Config
from tests.fixtures.redis_servers import RedisServer

from .bad_requests import ROUTES, FuzzRequest, any_request
from .harness import FuzzTarget

EXAMPLES = 200  # batches of up to 8 requests: some 900 requests per backend, a few seconds each
NOT_STATEFUL = ("/convostore/", "/{tail}")


@pytest.fixture(params=["memory", "redis"])
def target(request: pytest.FixtureRequest) -> Iterator[FuzzTarget]:
    if request.param == "memory":
        url = "memory://"
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flushall()
        url = server.url
    with FuzzTarget(url) as fuzz_target:
        yield fuzz_target


def test_every_stateful_route_has_a_strategy() -> None:
    app = create_app(Config.from_env({}))
    routed = {
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "*")
        and not route.resource.canonical.startswith(NOT_STATEFUL)
    }
    missing = routed - set(ROUTES)
    assert not missing, f"add a strategy for these routes to tests/fuzz/bad_requests.py: {sorted(missing)}"
    assert not set(ROUTES) - routed, "a strategy for a route the app does not have"


def test_fuzzed_requests_get_no_5xx_and_the_store_holds_only_what_was_accepted(target: FuzzTarget) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        # Shrinking a failure against a store that remembers every earlier example would mislead: the
        # failure report carries the exact request instead.
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(any_request, min_size=1, max_size=8))
    def fuzz(batch: list[FuzzRequest]) -> None:
        target.send(batch)

    fuzz()
    assert not target.mismatches()
    accepted = sum(n for t in target.tally.values() for s, n in t.statuses.items() if s < 300)
    assert accepted > 0, "no request was accepted: the strategies no longer reach the routes"
