"""Settles background runs whose replica died: a reaper on every replica looks at the runs whose lease
check is due, takes over those whose lease lapsed (one reaper wins each), and stores them as the runner
would have, with what the log captured: `failed` (or `cancelled`, when a cancel was asked for)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..periodic import every
from ..response_record import resource_from_record
from ..store import History, Store
from ..stored_items import decode_items
from ..turns import record_response
from ..wire import events as ev
from .capture import settled
from .lease import LEASE_MS, REAP_INTERVAL_SECONDS, now_ms
from .record import RunRecord
from .runner import Runner, numbered_events

log = logging.getLogger("convostore.runs")

DIED_MESSAGE = "The replica running this response stopped before it finished."
_BATCH = 100


async def reap_once(store: Store, runner: Runner) -> int:
    """One pass over the due runs; how many were settled here."""
    settled_here = 0
    now = now_ms()
    for response_id in await store.due_runs(now, _BATCH):
        if runner.runs_here(response_id):
            await store.track_run(response_id, now + LEASE_MS)
            continue
        outcome, tenant = await store.take_over_run(response_id, runner.owner, LEASE_MS)
        if outcome == "alive":
            await store.track_run(response_id, now + LEASE_MS)
        elif outcome != "taken":
            await store.track_run(response_id, None)
        else:
            try:
                status = await settle_orphan(store, runner.owner, tenant, response_id)
            except Exception:
                # One run that will not settle (its record unreadable, the store failing on it) must not
                # hold up the runs behind it: it is looked at again after a lease, the rest go on now.
                log.warning("settling orphaned background response %s failed", response_id, exc_info=True)
                await store.track_run(response_id, now + LEASE_MS)
                continue
            await store.track_run(response_id, None)
            runner.metrics.background_reaped.inc()
            if status == "cancelled":
                runner.metrics.background_cancels.inc()
            settled_here += 1
    return settled_here


async def settle_orphan(store: Store, owner: str, tenant: str, response_id: str) -> str | None:
    """Store a run this replica took over, with what its log holds, and end it; its final status."""
    state = await store.read_run(tenant, response_id, -1)
    if state is None:
        return None
    record = RunRecord.decode(state.record)
    stored = await store.resolve_response(tenant, response_id, "output")
    if stored is not None:  # the runner stored its turn and died before it logged the end: that end
        final, terminal = _stored_end(response_id, stored, state.last_seq)
    else:
        status = "cancelled" if state.cancel else "failed"
        error = {"code": "server_error", "message": DIED_MESSAGE} if status == "failed" else None
        final, terminal = settled(record.base, state.events, status, state.last_seq, error)
        try:
            result = await record_response(
                store,
                record.plan(tenant, response_id),
                final,
                idempotency_key=record.idempotency_key,
                request_hash=record.request_hash,
            )
            stored_first = result.replayed
        except Exception:  # its reservation lapsed, or the store is away: the run still ends
            log.exception("storing orphaned background response %s failed", response_id)
            stored_first = True
        if stored_first:
            # A runner that stalled past its lease may have stored its turn since the look above: then the
            # log ends as the store says, not `failed` beside a stored `completed`.
            stored = await store.resolve_response(tenant, response_id, "output")
            if stored is not None:
                final, terminal = _stored_end(response_id, stored, state.last_seq)
    try:
        await store.finish_run(response_id, owner, str(final["status"]), numbered_events([terminal]))
    finally:  # the turn is settled: its quota slot is free even if the log could not be ended
        if record.holds_slot:
            await store.release_run_slot(tenant, response_id)
    log.warning(
        "settled orphaned background response %s as %s",
        response_id,
        final["status"],
        extra={"tenant": tenant, "response_id": response_id, "status": final["status"]},
    )
    return str(final["status"])


def _stored_end(response_id: str, stored: History, last_seq: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored response and the terminal event that logs it, numbered after the log's last event."""
    final = resource_from_record(response_id, stored.body, decode_items(stored.items))
    terminal = ev.lifecycle(ev.TERMINAL_BY_STATUS.get(final["status"], "response.completed"), final)
    terminal["sequence_number"] = last_seq + 1
    return final, terminal


@contextlib.asynccontextmanager
async def reaping(
    store: Store, runner: Runner, interval: float = REAP_INTERVAL_SECONDS
) -> AsyncIterator[None]:
    async def tick() -> None:
        try:
            await reap_once(store, runner)
        except Exception:  # the store is away, or one run would not settle: the next pass retries
            log.warning("reaping background responses failed", exc_info=True)

    async with every(interval, tick):
        yield
