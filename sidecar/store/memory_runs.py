"""The memory backend's background runs, by the same rules as lua/*_run*-1.lua: the run, its lease, its
event log and the reapers' index, and the tenants' background quota slots."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..ids import parse_response_id
from .base import RUN_EVENTS_MAX, RUN_TERMINAL, RunSignal, RunState


@dataclass(slots=True)
class Run:
    """A background run, as lua/includes/runs.lua keeps it."""

    tenant: str
    record: bytes
    owner: str
    lease_until: float  # monotonic; the lease key's PX
    expires_at: float
    status: str = "queued"
    cancel: bool = False
    last_seq: int = -1
    events: list[tuple[int, bytes]] = field(default_factory=list)


class MemoryRuns:
    """Mixed into MemoryStore, which holds the state below (its sweep drops expired runs too)."""

    _ttl: float
    _runs: dict[str, Run]
    _run_index: dict[str, int]
    _run_slots: dict[str, dict[str, float]]

    def _live_run(self, response_id: str) -> Run | None:
        run = self._runs.get(response_id)
        if run is not None and run.expires_at <= time.monotonic():
            del self._runs[response_id]
            return None
        return run

    def _log_events(self, run: Run, events: list[tuple[int, bytes]]) -> bool:
        added = False
        for seq, event in events:
            if seq > run.last_seq:
                run.events.append((seq, event))
                run.last_seq = seq
                added = True
        if len(run.events) > RUN_EVENTS_MAX:
            del run.events[: len(run.events) - RUN_EVENTS_MAX]
        run.expires_at = time.monotonic() + self._ttl
        return added

    async def start_run(
        self, tenant: str, response_id: str, record: bytes, owner: str, lease_ms: int
    ) -> bool:
        if parse_response_id(response_id) is None or self._live_run(response_id) is not None:
            return False
        now = time.monotonic()
        self._runs[response_id] = Run(tenant, record, owner, now + lease_ms / 1000, now + self._ttl)
        return True

    async def append_run_events(
        self, response_id: str, owner: str, events: list[tuple[int, bytes]], lease_ms: int
    ) -> RunSignal:
        run = self._live_run(response_id)
        if run is None or run.owner != owner or run.status in RUN_TERMINAL:
            return RunSignal(owned=False, cancel=bool(run and run.cancel))
        if self._log_events(run, events):
            run.status = "in_progress"
        run.lease_until = time.monotonic() + lease_ms / 1000
        return RunSignal(owned=True, cancel=run.cancel)

    async def finish_run(
        self, response_id: str, owner: str, status: str, events: list[tuple[int, bytes]]
    ) -> bool:
        run = self._live_run(response_id)
        if run is None or run.owner != owner or run.status in RUN_TERMINAL:
            return False
        self._log_events(run, events)
        run.status = status
        run.lease_until = 0.0
        return True

    async def read_run(self, tenant: str, response_id: str, after: int | None = None) -> RunState | None:
        run = self._live_run(response_id)
        if run is None or run.tenant != tenant:
            return None
        events = [] if after is None else [event for seq, event in run.events if seq > after]
        return RunState(
            status=run.status,
            record=run.record,
            cancel=run.cancel,
            owner=run.owner,
            leased=run.lease_until > time.monotonic(),
            last_seq=run.last_seq,
            events=events,
        )

    async def cancel_run(self, tenant: str, response_id: str) -> str | None:
        run = self._live_run(response_id)
        if run is None or run.tenant != tenant:
            return None
        if run.status not in RUN_TERMINAL:
            run.cancel = True
        return run.status

    async def take_over_run(self, response_id: str, owner: str, lease_ms: int) -> tuple[str, str]:
        run = self._live_run(response_id)
        if run is None:
            return "missing", ""
        if run.status in RUN_TERMINAL:
            return "done", ""
        now = time.monotonic()
        if run.lease_until > now:
            return "alive", ""
        run.owner, run.lease_until = owner, now + lease_ms / 1000
        return "taken", run.tenant

    async def track_run(self, response_id: str, check_at_ms: int | None) -> None:
        if check_at_ms is None:
            self._run_index.pop(response_id, None)
        else:
            self._run_index[response_id] = check_at_ms

    async def due_runs(self, now_ms: int, limit: int) -> list[str]:
        due = sorted((at, rid) for rid, at in self._run_index.items() if at <= now_ms)
        return [rid for _, rid in due[:limit]]

    async def hold_run_slot(
        self, tenant: str, response_id: str, limit: int, stale_ms: int
    ) -> tuple[bool, int]:
        now = time.monotonic()
        running = {rid: at for rid, at in self._run_slots.get(tenant, {}).items() if at > now}
        if response_id not in running and len(running) >= limit:
            self._keep_run_slots(tenant, running)
            return False, len(running)
        running[response_id] = now + stale_ms / 1000
        self._keep_run_slots(tenant, running)
        return True, len(running)

    async def release_run_slot(self, tenant: str, response_id: str) -> int:
        now = time.monotonic()
        running = {rid: at for rid, at in self._run_slots.get(tenant, {}).items() if at > now}
        running.pop(response_id, None)
        self._keep_run_slots(tenant, running)
        return len(running)

    def _keep_run_slots(self, tenant: str, running: dict[str, float]) -> None:
        if running:
            self._run_slots[tenant] = running
        else:
            self._run_slots.pop(tenant, None)
