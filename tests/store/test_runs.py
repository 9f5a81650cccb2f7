"""Background runs in the store (sidecar/runs/): event log, lease, cancel, take-over, on every backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from sidecar.ids import conversation_tag, mint_response_id
from sidecar.runs.lease import LEASE_MS, now_ms
from sidecar.runs.reaper import reap_once
from sidecar.runs.record import RunRecord
from sidecar.runs.runner import Runner
from sidecar.turns import TurnPlan
from sidecar.wire.resource import build_response_resource
from tests.store.conftest import Backend

TENANT = "t1"


def response_id(n: int = 0) -> str:
    return mint_response_id(conversation_tag(TENANT, f"conv_runs_{time.time_ns()}"), n)


def events(first: int, last: int) -> list[tuple[int, bytes]]:
    return [(n, b'{"sequence_number":%d}' % n) for n in range(first, last + 1)]


async def test_a_run_logs_its_events_in_order_and_skips_what_it_logged_already(backend: Backend) -> None:
    store, rid = backend.store, response_id()
    assert await store.start_run(TENANT, rid, b"record", "owner-a", 5000)
    assert not await store.start_run(TENANT, rid, b"other", "owner-b", 5000)
    state = await store.read_run(TENANT, rid, -1)
    assert state is not None
    assert (state.status, state.record, state.owner, state.leased, state.last_seq) == (
        "queued",
        b"record",
        "owner-a",
        True,
        -1,
    )
    assert state.events == []
    signal = await store.append_run_events(rid, "owner-a", events(0, 4), 5000)
    assert signal.owned and not signal.cancel
    # A retried write (0..4 again) and the next ones: nothing doubled.
    await store.append_run_events(rid, "owner-a", events(3, 9), 5000)
    state = await store.read_run(TENANT, rid, -1)
    assert state is not None and state.status == "in_progress" and state.last_seq == 9
    assert state.events == [e for _, e in events(0, 9)]
    after = await store.read_run(TENANT, rid, 6)
    assert after is not None and after.events == [e for _, e in events(7, 9)]
    nothing = await store.read_run(TENANT, rid)
    assert nothing is not None and nothing.events == []


async def test_only_the_owner_writes_and_a_finished_run_takes_no_more(backend: Backend) -> None:
    store, rid = backend.store, response_id()
    await store.start_run(TENANT, rid, b"r", "owner-a", 5000)
    signal = await store.append_run_events(rid, "owner-b", events(0, 1), 5000)
    assert not signal.owned
    assert await store.finish_run(rid, "owner-b", "completed", events(0, 0)) is False
    assert await store.finish_run(rid, "owner-a", "completed", events(0, 2))
    state = await store.read_run(TENANT, rid, -1)
    assert state is not None and state.finished and state.status == "completed"
    assert not state.leased
    assert len(state.events) == 3
    assert not (await store.append_run_events(rid, "owner-a", events(3, 3), 5000)).owned
    assert not await store.finish_run(rid, "owner-a", "failed", [])


async def test_another_tenant_sees_no_run(backend: Backend) -> None:
    store, rid = backend.store, response_id()
    await store.start_run(TENANT, rid, b"r", "owner-a", 5000)
    assert await store.read_run("t2", rid, -1) is None
    assert await store.cancel_run("t2", rid) is None
    assert await store.read_run(TENANT, response_id(1)) is None
    assert await store.read_run(TENANT, "resp_not_minted") is None


async def test_cancel_sets_a_flag_the_runner_reads_back(backend: Backend) -> None:
    store, rid = backend.store, response_id()
    await store.start_run(TENANT, rid, b"r", "owner-a", 5000)
    assert await store.cancel_run(TENANT, rid) == "queued"
    signal = await store.append_run_events(rid, "owner-a", [], 5000)
    assert signal.owned and signal.cancel
    await store.finish_run(rid, "owner-a", "cancelled", events(0, 0))
    assert await store.cancel_run(TENANT, rid) == "cancelled"


async def test_a_lapsed_lease_is_taken_over_once(backend: Backend) -> None:
    store, rid = backend.store, response_id()
    await store.start_run(TENANT, rid, b"r", "owner-a", 100)
    assert await store.take_over_run(rid, "reaper", 5000) == ("alive", "")
    await asyncio.sleep(0.25)
    claims = await asyncio.gather(*(store.take_over_run(rid, f"reaper-{n}", 5000) for n in range(5)))
    assert sorted(c[0] for c in claims) == ["alive"] * 4 + ["taken"]
    winner = next(n for n, c in enumerate(claims) if c[0] == "taken")
    assert claims[winner][1] == TENANT
    # The runner that lost its lease can write no more; the new owner finishes it.
    assert not (await store.append_run_events(rid, "owner-a", events(0, 0), 5000)).owned
    assert await store.finish_run(rid, f"reaper-{winner}", "failed", events(0, 0))
    assert await store.take_over_run(rid, "reaper", 5000) == ("done", "")
    assert await store.take_over_run(response_id(7), "reaper", 5000) == ("missing", "")


async def test_the_index_hands_out_due_runs(backend: Backend) -> None:
    store = backend.store
    if backend.name != "memory":
        backend.server.flushall()
    ids = [response_id(n) for n in range(3)]
    await store.track_run(ids[0], 1000)
    await store.track_run(ids[1], 2000)
    await store.track_run(ids[2], 9000)
    assert await store.due_runs(2500, 10) == ids[:2]
    assert await store.due_runs(2500, 1) == ids[:1]
    await store.track_run(ids[0], None)
    await store.track_run(ids[1], 5000)
    assert await store.due_runs(2500, 10) == []
    assert await store.due_runs(10_000, 10) == [ids[1], ids[2]]


@pytest.mark.parametrize("count", [1, 300])
async def test_events_survive_as_bytes(backend: Backend, count: int) -> None:
    store, rid = backend.store, response_id()
    await store.start_run(TENANT, rid, b"\x00\xffrecord", "o", 5000)
    payload = [(n, ("é" * n).encode() + b"\x00") for n in range(count)]
    await store.append_run_events(rid, "o", payload, 5000)
    state = await store.read_run(TENANT, rid, -1)
    assert state is not None and state.record == b"\x00\xffrecord"
    assert state.events == [e for _, e in payload]


async def test_a_run_that_will_not_settle_does_not_stop_the_reaper_settling_others(backend: Backend) -> None:
    store = backend.store
    tenant, owner = "t-reap", "a-dead-replica"
    # Due first: a run whose record no replica can read (written by a later version, or damaged).
    poison = mint_response_id(conversation_tag(tenant, "poisoned"), 0)
    assert await store.start_run(tenant, poison, b"{not json", owner, 1)
    await store.track_run(poison, 1)
    # Due after it: an ordinary orphan (its turn's reservation is gone too: it is stored as far as it can be).
    orphan = mint_response_id(conversation_tag(tenant, "c-orphan"), 7)
    plan = TurnPlan(
        tenant=tenant,
        conversation_id="c-orphan",
        tag=conversation_tag(tenant, "c-orphan"),
        previous_response_id=None,
        in_conversation=False,
        history=[],
        version=0,
        response_id=orphan,
    )
    base = build_response_resource(
        response_id=plan.response_id, created_at=0, status="queued", model="m", output=[], request={}
    )
    record = RunRecord.of(plan, base, None, "hash")
    assert await store.start_run(tenant, plan.response_id, record.encode(), owner, 1)
    await store.track_run(plan.response_id, 2)
    await asyncio.sleep(0.01)  # both leases lapse

    reaper = Runner(store)
    assert await reap_once(store, reaper) == 1  # the orphan, though the run before it failed to settle
    state = await store.read_run(tenant, plan.response_id, -1)
    assert state is not None and state.finished
    assert poison in await store.due_runs(now_ms() + LEASE_MS + 1, 10)  # looked at again after a lease
    assert plan.response_id not in await store.due_runs(now_ms() + LEASE_MS + 1, 10)
