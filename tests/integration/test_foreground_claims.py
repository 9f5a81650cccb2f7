"""A foreground call holds its idempotency claim, and a record index reserved in a conversation that does not
exist yet, a claim's life at a time (CLAIM_SECONDS), renewed while it runs: a generation longer than a claim
keeps both, and a claim whose sidecar died lapses soon, so a retry runs. Here a claim lives 300 ms, on memory
and on a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp.test_utils import TestServer

from sidecar.appkeys import STORE
from sidecar.auth import DEFAULT_TENANT
from sidecar.handlers.common import request_hash
from sidecar.ids import conversation_id_for_idempotency_key
from sidecar.store.base import CLAIM_RENEW_SECONDS, CLAIM_SECONDS, Claim
from sidecar.turns import CLAIM_WAIT_SECONDS
from tests.fixtures.fake_engine import recorded
from tests.fixtures.redis_servers import RedisServer, redis_call
from tests.integration.conftest import CLAIM_MS, SidecarFactory
from tests.integration.test_background import slow


def test_a_claim_is_renewed_well_within_its_life_and_a_dead_ones_lapses_within_a_retrys_wait() -> None:
    assert CLAIM_RENEW_SECONDS * 3 <= CLAIM_SECONDS
    # A retry waits CLAIM_WAIT_SECONDS, then gets 409 (which the openai SDK retries): its second try runs.
    assert CLAIM_SECONDS <= 2 * CLAIM_WAIT_SECONDS


async def test_a_call_longer_than_its_claim_keeps_its_key(short_claims: Any, engine: TestServer) -> None:
    sidecar = short_claims
    slow(engine, 0.1, 15)  # 1.5 s: five claim lives
    body = {"model": "m", "input": "a long one"}
    key = {"Idempotency-Key": "long-call-1"}
    first = asyncio.ensure_future(sidecar.post("/v1/responses", json=body, headers=key))
    await asyncio.sleep(CLAIM_MS * 2 / 1000)
    # The key is still the first call's: the retry waits for it and replays its answer (without renewals the
    # claim lapsed after 300 ms: the retry called the engine a second time, and the first call, whose
    # reservation the retry had taken over, could not store its turn).
    retry = await sidecar.post("/v1/responses", json=body, headers=key)
    original = await first
    assert original.status == 200, await original.text()
    assert retry.status == 200, await retry.text()
    assert (await retry.json())["id"] == (await original.json())["id"]
    assert len(recorded(engine.app, "/v1/responses")) == 1


async def test_a_claim_whose_sidecar_died_lapses_and_a_retry_runs(short_claims: Any, engine: Any) -> None:
    sidecar = short_claims
    raw = orjson.dumps({"model": "m", "input": "hello"})
    key = "left-by-a-dead-sidecar"
    # What a sidecar that died mid-call leaves: the key claimed in a conversation not yet stored, and nothing
    # renewing it.
    await sidecar.app[STORE].begin_turn(
        DEFAULT_TENANT,
        conversation_id=conversation_id_for_idempotency_key(DEFAULT_TENANT, key),
        claim=Claim(key, request_hash(raw, "responses"), fresh=True),
    )
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    retry = await sidecar.post("/v1/responses", data=raw, headers=headers)
    assert retry.status == 200, await retry.text()
    assert (await retry.json())["status"] == "completed"
    assert len(recorded(engine.app, "/v1/responses")) == 1


async def test_a_turn_whose_reservation_was_lost_is_a_503_and_stores_nothing(
    make_sidecar: SidecarFactory, engine: TestServer, redis_server: RedisServer
) -> None:
    """Its record index gone while the engine ran (here overwritten; in life lapsed while the store was
    away, or taken over by a retry): the turn cannot be stored under the id it was given. A clear, retryable
    503, not a 500."""
    redis_server.flushall()
    sidecar = await make_sidecar(redis_url=redis_server.url, upstream=str(engine.make_url("")))
    root = await sidecar.post("/v1/responses", json={"model": "m", "input": "first"})
    root_id = (await root.json())["id"]
    slow(engine, 0.1, 5)
    chained = {"model": "m", "input": "second", "previous_response_id": root_id}
    call = asyncio.ensure_future(sidecar.post("/v1/responses", json=chained))
    await asyncio.sleep(0.2)  # the engine is answering; the turn's record index (1) is reserved
    records = redis_call(redis_server.port, "KEYS", "cs:*:rec")
    assert isinstance(records, list) and len(records) == 1
    reservation = redis_call(redis_server.port, "LINDEX", records[0], "1")
    assert isinstance(reservation, str) and reservation.startswith("\0")  # and the id's random part
    redis_call(redis_server.port, "LSET", records[0], "1", "taken")
    resp = await call
    error = (await resp.json())["error"]
    assert resp.status == 503, error
    assert error["code"] == "store_unavailable" and "retry the request" in error["message"]
    metas = redis_call(redis_server.port, "KEYS", "cs:*:meta")
    assert isinstance(metas, list) and len(metas) == 1
    assert redis_call(redis_server.port, "HGET", metas[0], "v") == "1"  # the root's turn only: nothing stored
