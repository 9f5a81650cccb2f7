"""Authentication modes and tenant isolation: another tenant's ids are simply not found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text("tenants:\n  acme:\n    api_keys: [sk-acme]\n  globex:\n    api_keys: [sk-globex]\n")
    return str(path)


async def test_api_keys_authenticate_and_isolate_tenants(make_sidecar: Any, policy: str) -> None:
    sidecar = await make_sidecar(redis_url="memory://", auth="api_keys", config_path=policy)
    message = {"role": "user", "content": "secret"}
    resp = await sidecar.post("/v1/sessions/c1/append", json=message)
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "missing_api_key"
    resp = await sidecar.post(
        "/v1/sessions/c1/append", json=message, headers={"Authorization": "Bearer sk-wrong"}
    )
    assert resp.status == 401 and (await resp.json())["error"]["type"] == "invalid_request_error"
    acme = {"Authorization": "Bearer sk-acme"}
    globex = {"Authorization": "Bearer sk-globex"}
    assert (await sidecar.post("/v1/sessions/c1/append", json=message, headers=acme)).status == 200
    stored = await sidecar.post(
        "/v1/sessions/c1/store_response",
        json={"message": {"role": "assistant", "content": "ok"}},
        headers=acme,
    )
    response_id = (await stored.json())["response_id"]
    assert (await sidecar.get("/v1/sessions/c1", headers=globex)).status == 404
    assert (await sidecar.get(f"/v1/responses/{response_id}", headers=globex)).status == 404
    assert (await sidecar.delete(f"/v1/responses/{response_id}", headers=globex)).status == 404
    assert (await sidecar.get(f"/v1/responses/{response_id}", headers=acme)).status == 200
    # Same conversation id, other tenant: a separate conversation.
    assert (await sidecar.post("/v1/sessions/c1/append", json=message, headers=globex)).status == 200
    acme_view = await (await sidecar.get("/v1/sessions/c1", headers=acme)).json()
    assert acme_view["version"] == 2
    assert (await sidecar.get("/convostore/healthz")).status == 200  # own endpoints need no key


async def test_trusted_header_mode(make_sidecar: Any) -> None:
    sidecar = await make_sidecar(redis_url="memory://", auth="trusted_header")
    message = {"role": "user", "content": "x"}
    assert (await sidecar.post("/v1/sessions/c1/append", json=message)).status == 401
    assert (
        await sidecar.post("/v1/sessions/c1/append", json=message, headers={"X-Tenant-Id": "t1"})
    ).status == 200
    assert (await sidecar.get("/v1/sessions/c1", headers={"X-Tenant-Id": "t2"})).status == 404
    assert (await sidecar.get("/v1/sessions/c1", headers={"X-Tenant-Id": "t1"})).status == 200
