"""store_response's optional "response_id" (CONTRACT §2): a gateway keeps its own id for the response it
stores, and every route that takes a response id finds the response by it — the session API's resolve and
writes, /v1/responses chaining, retrieve, input items, delete — within the tenant that stored it. On memory
and a real redis-server."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.fake_engine import recorded
from tests.integration.conftest import SidecarFactory

Client = TestClient[Any, Any]
ACME = {"X-Tenant-Id": "acme"}


@pytest.fixture(params=["memory", "redis"])
async def sidecar(request: pytest.FixtureRequest, make_sidecar: SidecarFactory, engine: TestServer) -> Client:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    return await make_sidecar(redis_url=url, upstream=str(engine.make_url("")), auth="trusted_header")


async def call(
    sidecar: Client, method: str, path: str, body: Any = None, tenant: str = "acme"
) -> tuple[int, Any]:
    resp = await sidecar.request(method, path, json=body, headers={"X-Tenant-Id": tenant})
    return resp.status, await resp.json()


async def store(sidecar: Client, conversation: str, text: str, **extra: Any) -> tuple[int, Any]:
    body = {"message": {"role": "assistant", "content": text}, **extra}
    return await call(sidecar, "POST", f"/v1/sessions/{conversation}/store_response", body)


async def test_a_chosen_id_finds_the_response_on_every_route(sidecar: Client, engine: TestServer) -> None:
    assert (await call(sidecar, "POST", "/v1/sessions/chosen/append", {"role": "user", "content": "hi"}))[
        0
    ] == 200
    status, stored = await store(sidecar, "chosen", "hello there", response_id="chatcmpl-gw-1")
    assert status == 200, stored
    assert stored["response_id"] == "chatcmpl-gw-1"

    status, resolved = await call(sidecar, "GET", "/v1/sessions/resolve?previous_response_id=chatcmpl-gw-1")
    assert status == 200, resolved
    assert resolved["response_id"] == "chatcmpl-gw-1"
    assert [m["content"] for m in resolved["messages"]] == ["hi", "hello there"]

    status, fetched = await call(sidecar, "GET", "/v1/responses/chatcmpl-gw-1")
    assert status == 200 and fetched["id"] == "chatcmpl-gw-1", fetched
    assert fetched["output"][0]["content"][0]["text"] == "hello there"
    status, inputs = await call(sidecar, "GET", "/v1/responses/chatcmpl-gw-1/input_items?order=asc")
    assert status == 200 and [i["content"][0]["text"] for i in inputs["data"]] == ["hi"], inputs

    body = {"model": "m", "input": "and now?", "previous_response_id": "chatcmpl-gw-1"}
    status, chained = await call(sidecar, "POST", "/v1/responses", body)
    assert status == 200, chained
    sent = recorded(engine.app, "/v1/responses")[-1]["body"]["input"]
    assert [part["text"] for item in sent for part in item["content"]] == ["hi", "hello there", "and now?"]

    branch = {"items": [{"role": "user", "content": "a branch"}], "previous_response_id": "chatcmpl-gw-1"}
    assert (await call(sidecar, "POST", "/v1/sessions/chosen/append", branch))[0] == 200

    assert (await call(sidecar, "DELETE", "/v1/responses/chatcmpl-gw-1"))[0] == 200
    assert (await call(sidecar, "GET", "/v1/responses/chatcmpl-gw-1"))[0] == 404
    assert (await call(sidecar, "GET", "/v1/sessions/resolve?previous_response_id=chatcmpl-gw-1"))[0] == 404


async def test_a_chosen_id_is_one_response_of_one_tenant(sidecar: Client) -> None:
    assert (await store(sidecar, "mine", "first", response_id="gw-2"))[0] == 200
    status, again = await store(sidecar, "mine", "second", response_id="gw-2")
    assert status == 400 and again["error"]["param"] == "response_id", again
    # another tenant neither finds it nor is kept from choosing the same id for its own response
    path = "/v1/sessions/resolve?previous_response_id=gw-2"
    assert (await call(sidecar, "GET", path, tenant="globex"))[0] == 404
    status, theirs = await call(
        sidecar,
        "POST",
        "/v1/sessions/theirs/store_response",
        {"message": {"role": "assistant", "content": "x"}, "response_id": "gw-2"},
        tenant="globex",
    )
    assert status == 200 and theirs["response_id"] == "gw-2", theirs
    status, resolved = await call(sidecar, "GET", path)
    assert status == 200 and resolved["conversation_id"] == "mine"


async def test_a_failed_store_gives_the_chosen_id_back(sidecar: Client) -> None:
    assert (await call(sidecar, "POST", "/v1/sessions/moved/append", {"role": "user", "content": "a"}))[
        0
    ] == 200
    resp = await sidecar.post(
        "/v1/sessions/moved/store_response",
        json={"message": {"role": "assistant", "content": "b"}, "response_id": "gw-3"},
        headers={**ACME, "If-Match": "7"},
    )
    assert resp.status == 409, await resp.text()
    status, stored = await store(sidecar, "moved", "b", response_id="gw-3")
    assert status == 200 and stored["response_id"] == "gw-3", stored


async def test_a_keyed_retry_answers_the_chosen_id_and_stores_nothing_twice(sidecar: Client) -> None:
    body = {"message": {"role": "assistant", "content": "once"}, "response_id": "gw-4"}
    keyed = {**ACME, "Idempotency-Key": "store-4"}
    first = await sidecar.post("/v1/sessions/retried/store_response", json=body, headers=keyed)
    retry = await sidecar.post("/v1/sessions/retried/store_response", json=body, headers=keyed)
    assert first.status == retry.status == 200, await retry.text()
    assert await retry.json() == await first.json()
    assert (await retry.json())["response_id"] == "gw-4"
    status, session = await call(sidecar, "GET", "/v1/sessions/retried")
    assert status == 200 and len(session["items"]) == 1 and session["version"] == 1
    other_body = {**body, "message": {"role": "assistant", "content": "another"}}
    reused = await sidecar.post("/v1/sessions/retried/store_response", json=other_body, headers=keyed)
    assert reused.status == 409 and (await reused.json())["error"]["code"] == "idempotency_key_reused"
    unkeyed = await sidecar.post("/v1/sessions/retried/store_response", json=body, headers=ACME)
    assert unkeyed.status == 400 and (await unkeyed.json())["error"]["param"] == "response_id"
