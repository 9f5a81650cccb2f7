"""What the sidecar asks of the engine: never a compressed answer it did not mean to read.

The engine client does not decompress (pass-through relays the engine's encoding as it is), so it must not
advertise an Accept-Encoding of its own: the stateful routes parse the engine's JSON, and a pass-through
client that asked for no encoding must not get one.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestServer

from tests.fixtures.fake_engine import recorded
from tests.integration.conftest import SidecarFactory


def _accept_encoding(headers: dict[str, str]) -> str | None:
    return next((value for name, value in headers.items() if name.lower() == "accept-encoding"), None)


async def test_stateful_calls_never_ask_the_engine_for_a_compressed_answer(
    make_sidecar: SidecarFactory, engine: TestServer
) -> None:
    sidecar = await make_sidecar(redis_url="memory://", upstream=str(engine.make_url("")).rstrip("/"))
    first = await sidecar.post("/v1/responses", json={"model": "m", "input": "hello"})
    assert first.status == 200, await first.text()
    body: dict[str, Any] = await first.json()
    chained = {"model": "m", "input": "again", "previous_response_id": body["id"], "stream": True}
    second = await sidecar.post("/v1/responses", json=chained)
    assert second.status == 200, await second.text()
    await second.read()
    sent = recorded(engine.app, "/v1/responses")
    assert len(sent) == 2
    assert [_accept_encoding(r["headers"]) for r in sent] == [None, None]


async def test_pass_through_forwards_only_the_clients_own_accept_encoding(
    make_sidecar: SidecarFactory, engine: TestServer
) -> None:
    sidecar = await make_sidecar(redis_url="memory://", upstream=str(engine.make_url("")).rstrip("/"))
    plain = await sidecar.get("/v1/models", skip_auto_headers=["Accept-Encoding"])
    assert plain.status == 200 and "Content-Encoding" not in plain.headers
    asked = await sidecar.get("/v1/models", headers={"Accept-Encoding": "identity"})
    assert asked.status == 200
    sent = recorded(engine.app, "/v1/models")
    assert [_accept_encoding(r["headers"]) for r in sent] == [None, "identity"]
