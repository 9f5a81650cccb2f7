"""Through HTTP, on both store backends: a summary the `http` summariser stores counts in the tenant's
`stored_bytes` quota, so a conversation its summaries push over the limit is refused its next turn."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.appkeys import CONTEXT, STORE

SUMMARY_BYTES = 12_000
LIMIT = 10_000  # well above the turns' own bytes, below the turns and one summary


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return str(server.url)


@pytest.fixture
async def summariser_url() -> AsyncIterator[str]:
    async def summarise(request: web.Request) -> web.Response:
        return web.json_response({"summary": "s" * SUMMARY_BYTES})

    app = web.Application()
    app.router.add_post("/summarise", summarise)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/summarise"))
    await server.close()


async def test_stored_summaries_count_towards_the_stored_bytes_quota(
    tmp_path: Path, make_sidecar: Any, engine: TestServer, store_url: str, summariser_url: str
) -> None:
    tenant = f"sum-{os.urandom(3).hex()}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "policies:\n  default:\n    keep_last_turns: 2\n    summary_every_turns: 2\n"
        f"    summariser: http\n    summariser_url: {summariser_url}\n"
        f"tenants:\n  {tenant}:\n    quota: {{stored_bytes: {LIMIT}}}\n"
    )
    sidecar = await make_sidecar(
        upstream=str(engine.make_url("")).rstrip("/"),
        redis_url=store_url,
        auth="trusted_header",
        config_path=str(policy),
    )
    store, headers = sidecar.server.app[STORE], {"X-Tenant-Id": tenant}
    previous: str | None = None
    for n in range(1, 5):  # turn 4 leaves turns 1-2 to fold: the summariser stores their summary
        body: dict[str, Any] = {"model": "m", "input": f"question {n}"}
        if previous:
            body["previous_response_id"] = previous
        resp = await sidecar.post("/v1/responses", json=body, headers=headers)
        assert resp.status == 200, await resp.text()
        previous = (await resp.json())["id"]
        if n == 3:
            turns_only = (await store.usage(tenant))[0].stored_bytes
            assert 0 < turns_only < LIMIT
    await sidecar.server.app[CONTEXT].summary_writer.idle()
    usage = (await store.usage(tenant))[0].stored_bytes
    assert usage > LIMIT
    history = await store.resolve_response(tenant, previous)
    assert history is not None and history.summary_bytes >= SUMMARY_BYTES
    assert usage == history.session_bytes + history.summary_bytes

    refused = await sidecar.post(
        "/v1/responses",
        json={"model": "m", "input": "question 5", "previous_response_id": previous},
        headers=headers,
    )
    assert refused.status == 429 and (await refused.json())["error"]["code"] == "insufficient_quota"
