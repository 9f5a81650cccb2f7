"""Per-tenant quotas through HTTP: requests per minute shared by replicas, stored bytes and conversations
counted with the writes and given back by deletes and expiry; refusals are 429s that write nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.fake_engine import recorded

Client = TestClient[Any, Any]


def policy_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(body)
    return str(path)


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_server").url)


def tenant_headers(tenant: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant}


async def test_requests_per_minute_are_refused_with_429_and_the_openai_headers(
    tmp_path: Path, make_sidecar: Any, engine: TestServer, store_url: str
) -> None:
    tenant = f"acme-{os.urandom(3).hex()}"
    policy = policy_file(tmp_path, f"tenants:\n  {tenant}:\n    quota: {{requests_per_minute: 3}}\n")
    upstream = str(engine.make_url("")).rstrip("/")
    sidecar = await make_sidecar(
        upstream=upstream, redis_url=store_url, auth="trusted_header", config_path=policy
    )
    answers = [
        await sidecar.post(
            "/v1/responses", json={"model": "m", "input": "hi"}, headers=tenant_headers(tenant)
        )
        for _ in range(3)
    ]
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[-1].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[-1].headers["x-ratelimit-remaining-requests"] == "0"
    calls = len(recorded(engine.app))
    refused = await sidecar.post(
        "/v1/responses", json={"model": "m", "input": "hi"}, headers=tenant_headers(tenant)
    )
    error = (await refused.json())["error"]
    assert refused.status == 429 and error["code"] == "rate_limit_exceeded"
    assert (
        int(refused.headers["Retry-After"]) >= 1 and refused.headers["x-ratelimit-remaining-requests"] == "0"
    )
    assert len(recorded(engine.app)) == calls  # refused before the engine or the store
    passthrough = await sidecar.get("/v1/models", headers=tenant_headers(tenant))
    assert passthrough.status == 429  # the pass-through routes count too
    other = await sidecar.post(
        "/v1/responses", json={"model": "m", "input": "hi"}, headers=tenant_headers("other")
    )
    assert other.status == 200  # unlisted tenants have the default limits (none here)
    metrics = await (await sidecar.get("/convostore/metrics")).text()
    assert 'convostore_quota_rejections_total{kind="requests",tenant_class="listed"} 2.0' in metrics
    assert tenant not in metrics


async def test_replicas_on_one_redis_share_the_rate_limit(
    tmp_path: Path, make_sidecar: Any, engine: TestServer, redis_server: Any
) -> None:
    tenant = f"shared-{os.urandom(3).hex()}"
    policy = policy_file(tmp_path, f"tenants:\n  {tenant}:\n    quota: {{requests_per_minute: 4}}\n")
    upstream = str(engine.make_url("")).rstrip("/")
    replicas = [
        await make_sidecar(
            upstream=upstream, redis_url=redis_server.url, auth="trusted_header", config_path=policy
        )
        for _ in range(2)
    ]
    statuses = await asyncio.gather(
        *(replicas[n % 2].get("/v1/models", headers=tenant_headers(tenant)) for n in range(8))
    )
    assert sorted(s.status for s in statuses) == [200] * 4 + [429] * 4


async def test_stored_conversations_and_bytes_are_limited_and_given_back(
    tmp_path: Path, make_sidecar: Any, store_url: str
) -> None:
    tenant = f"small-{os.urandom(3).hex()}"
    policy = policy_file(
        tmp_path, f"tenants:\n  {tenant}:\n    quota: {{conversations: 2, stored_bytes: 100000}}\n"
    )
    sidecar = await make_sidecar(redis_url=store_url, auth="trusted_header", config_path=policy)
    headers = tenant_headers(tenant)
    for name in ("c1", "c2"):
        ok = await sidecar.post(
            f"/v1/sessions/{name}/append", json={"role": "user", "content": "x"}, headers=headers
        )
        assert ok.status == 200
    refused = await sidecar.post(
        "/v1/sessions/c3/append", json={"role": "user", "content": "x"}, headers=headers
    )
    error = (await refused.json())["error"]
    assert refused.status == 429 and error["code"] == "insufficient_quota" and refused.headers["Retry-After"]
    assert (await sidecar.get("/v1/sessions/c3", headers=headers)).status == 404  # nothing written
    assert (await sidecar.get("/v1/sessions/c1", headers=headers)).status == 200  # reads still work
    assert (await sidecar.delete("/v1/sessions/c1", headers=headers)).status == 200
    again = await sidecar.post(
        "/v1/sessions/c3/append", json={"role": "user", "content": "x"}, headers=headers
    )
    assert again.status == 200  # the deleted conversation was given back

    big = "y" * 60_000
    for name in ("c2", "c2"):
        await sidecar.post(
            f"/v1/sessions/{name}/append", json={"role": "user", "content": big}, headers=headers
        )
    over = await sidecar.post(
        "/v1/sessions/c3/append", json={"role": "user", "content": "z"}, headers=headers
    )
    assert over.status == 429 and (await over.json())["error"]["code"] == "insufficient_quota"


async def test_expired_conversations_are_given_back_by_reconciliation(
    tmp_path: Path, make_sidecar: Any, store_url: str
) -> None:
    from sidecar.appkeys import STORE
    from sidecar.quota import reconcile

    tenant = f"ttl-{os.urandom(3).hex()}"
    policy = policy_file(tmp_path, f"tenants:\n  {tenant}:\n    quota: {{conversations: 1}}\n")
    sidecar = await make_sidecar(
        redis_url=store_url, auth="trusted_header", config_path=policy, ttl_seconds=1
    )
    headers = tenant_headers(tenant)
    assert (
        await sidecar.post("/v1/sessions/a/append", json={"role": "user", "content": "x"}, headers=headers)
    ).status == 200
    assert (
        await sidecar.post("/v1/sessions/b/append", json={"role": "user", "content": "x"}, headers=headers)
    ).status == 429
    await asyncio.sleep(1.3)
    store = sidecar.server.app[STORE]
    assert await reconcile(store, tenant) == 1
    assert (
        await sidecar.post("/v1/sessions/b/append", json={"role": "user", "content": "x"}, headers=headers)
    ).status == 200
