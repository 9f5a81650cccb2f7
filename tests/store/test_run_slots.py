"""What a background run holds beyond its lease, on every backend: its turn's reservation and idempotency
claim, renewed while it runs (renew_turn), and its tenant's quota slot (hold_run_slot, release_run_slot).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from sidecar.store import RedisStore, Turn
from sidecar.store.base import Claim, IdempotencyInFlight
from tests.store.conftest import Backend
from tests.store.test_runs import response_id
from tests.store.test_store import TENANT, conv_id, item

CLAIM_MS = 300


def tenant() -> str:
    return f"slots-{os.urandom(3).hex()}"


async def test_slots_are_limited_per_tenant_refreshed_and_released(backend: Backend) -> None:
    store, acme, other = backend.store, tenant(), tenant()
    a, b, c = response_id(0), response_id(1), response_id(2)
    assert await store.hold_run_slot(acme, a, 2, 60_000) == (True, 1)
    assert await store.hold_run_slot(acme, b, 2, 60_000) == (True, 2)
    assert await store.hold_run_slot(acme, c, 2, 60_000) == (False, 2)
    assert await store.hold_run_slot(other, c, 2, 60_000) == (True, 1)  # each tenant its own count
    assert await store.hold_run_slot(acme, a, 0, 60_000) == (True, 2)  # a renewal of one it holds
    assert await store.hold_run_slot(acme, c, 0, 60_000) == (False, 2)  # a renewal never takes one
    assert await store.release_run_slot(acme, a) == 1
    assert await store.release_run_slot(acme, a) == 1  # twice (the runner and a reaper): harmless
    assert await store.hold_run_slot(acme, c, 2, 60_000) == (True, 2)
    assert await store.release_run_slot(acme, b) == 1
    assert await store.release_run_slot(acme, c) == 0


async def test_a_slot_not_renewed_goes_stale(backend: Backend) -> None:
    store, acme = backend.store, tenant()
    assert await store.hold_run_slot(acme, response_id(0), 1, 200) == (True, 1)
    assert (await store.hold_run_slot(acme, response_id(1), 1, 200))[0] is False
    await asyncio.sleep(0.35)  # every replica that could release it died
    assert await store.hold_run_slot(acme, response_id(1), 1, 200) == (True, 1)


@pytest.fixture
def short_claims(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    monkeypatch.setattr("sidecar.store.memory.CLAIM_SECONDS", CLAIM_MS / 1000)
    if isinstance(backend.store, RedisStore):
        backend.store._claim_ttl = CLAIM_MS
    return backend


async def test_a_renewed_turn_keeps_its_claim_and_its_reservation(short_claims: Backend) -> None:
    store = short_claims.store
    key = f"renewed-{os.urandom(3).hex()}"
    conv = f"conv_{key}"  # as conversation_id_for_idempotency_key would name it: a new conversation
    claim = Claim(key, "hash", fresh=True)
    begun = await store.begin_turn(TENANT, conversation_id=conv, claim=claim)
    rid = begun.response_id
    for _ in range(6):  # 0.6 s: two claim lives
        await asyncio.sleep(CLAIM_MS / 3000)
        assert await store.renew_turn(TENANT, conv, rid, claim)
    with pytest.raises(IdempotencyInFlight):  # still claimed: a retry waits, it does not run again
        await store.begin_turn(TENANT, conversation_id=conv, claim=claim)
    stored = await store.append_turn(
        Turn(TENANT, conv, [item(conv, "late")], 1, response_id=rid, idempotency_key=key, request_hash="hash")
    )
    assert stored.response_id == rid and stored.version == 1
    assert not await store.renew_turn(TENANT, conv, rid, claim)  # written: nothing left to renew


async def test_a_turn_not_renewed_loses_its_claim(short_claims: Backend) -> None:
    store = short_claims.store
    conv, claim = conv_id(), Claim(f"lapsed-{os.urandom(3).hex()}", "hash")
    first = await store.begin_turn(TENANT, conversation_id=conv, claim=claim)
    await asyncio.sleep(CLAIM_MS * 1.5 / 1000)
    again = await store.begin_turn(TENANT, conversation_id=conv, claim=claim)  # the claim lapsed
    assert again.response_id != first.response_id
