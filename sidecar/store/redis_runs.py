"""The Redis backend's background-run operations: one script each, on the run's keys in the response id's
slot (the reapers' index on its own key), so a run started on one replica is followed, cancelled and
settled from any other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..ids import parse_response_id
from ..keys import RUNS_INDEX_KEY, records_key, run_key, running_key
from .base import RUN_EVENTS_MAX, Claim, RunSignal, RunState

# A registered script: called with keys and args, it answers the script's reply.
Script = Callable[..., Awaitable[Any]]


class RedisRuns:
    """Mixed into RedisStore, whose scripts and retrying `_run` these use."""

    _ttl: int
    _claim_ttl: int
    _run_scripts: dict[str, Script]

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        raise NotImplementedError

    async def start_run(
        self, tenant: str, response_id: str, record: bytes, owner: str, lease_ms: int
    ) -> bool:
        key = _run_key(response_id)
        if key is None:
            return False
        args = [tenant, record, owner, lease_ms, self._ttl]
        return bool(await self._run(self._run_scripts["start_run"], [key], args))

    async def append_run_events(
        self, response_id: str, owner: str, events: list[tuple[int, bytes]], lease_ms: int
    ) -> RunSignal:
        key = _run_key(response_id)
        if key is None:
            return RunSignal(owned=False, cancel=False)
        args: list[Any] = [owner, lease_ms, self._ttl, RUN_EVENTS_MAX, *_flat(events)]
        owned, cancel = await self._run(self._run_scripts["append_run_events"], [key], args)
        return RunSignal(owned=bool(owned), cancel=bool(cancel))

    async def finish_run(
        self, response_id: str, owner: str, status: str, events: list[tuple[int, bytes]]
    ) -> bool:
        key = _run_key(response_id)
        if key is None:
            return False
        args: list[Any] = [owner, status, self._ttl, RUN_EVENTS_MAX, *_flat(events)]
        return bool(await self._run(self._run_scripts["finish_run"], [key], args))

    async def read_run(self, tenant: str, response_id: str, after: int | None = None) -> RunState | None:
        key = _run_key(response_id)
        if key is None:
            return None
        reply = await self._run(
            self._run_scripts["read_run"], [key], [tenant, "" if after is None else after]
        )
        if not reply:
            return None
        status, record, cancel, owner, leased, last = reply[:6]
        return RunState(
            status=text(status),
            record=record,
            cancel=text(cancel) == "1",
            owner=text(owner),
            leased=bool(leased),
            last_seq=int(last),
            events=list(reply[6:]),
        )

    async def cancel_run(self, tenant: str, response_id: str) -> str | None:
        key = _run_key(response_id)
        if key is None:
            return None
        status = text(await self._run(self._run_scripts["cancel_run"], [key], [tenant]))
        return status or None

    async def take_over_run(self, response_id: str, owner: str, lease_ms: int) -> tuple[str, str]:
        key = _run_key(response_id)
        if key is None:
            return "missing", ""
        reply = await self._run(self._run_scripts["take_over_run"], [key], [owner, lease_ms])
        return text(reply[0]), text(reply[1]) if len(reply) > 1 else ""

    async def track_run(self, response_id: str, check_at_ms: int | None) -> None:
        args = [response_id, "" if check_at_ms is None else check_at_ms]
        await self._run(self._run_scripts["track_run"], [RUNS_INDEX_KEY], args)

    async def due_runs(self, now_ms: int, limit: int) -> list[str]:
        reply = await self._run(self._run_scripts["due_runs"], [RUNS_INDEX_KEY], [now_ms, limit])
        return [text(r) for r in reply]

    async def renew_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None
    ) -> bool:
        parsed = parse_response_id(response_id)
        if parsed is None:
            return False
        args = [
            response_id,
            claim.key if claim else "",
            claim.request_hash if claim else "",
            tenant,
            conversation_id,
            self._claim_ttl,
            self._ttl,
        ]
        return bool(await self._run(self._run_scripts["renew_turn"], [records_key(parsed[0])], args))

    async def hold_run_slot(
        self, tenant: str, response_id: str, limit: int, stale_ms: int
    ) -> tuple[bool, int]:
        args = [response_id, limit, stale_ms]
        held, running = await self._run(self._run_scripts["hold_run_slot"], [running_key(tenant)], args)
        return bool(held), int(running)

    async def release_run_slot(self, tenant: str, response_id: str) -> int:
        return int(
            await self._run(self._run_scripts["release_run_slot"], [running_key(tenant)], [response_id])
        )


def text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _run_key(response_id: str) -> str | None:
    parsed = parse_response_id(response_id)
    return run_key(parsed[0], response_id) if parsed is not None else None


def _flat(events: list[tuple[int, bytes]]) -> list[Any]:
    return [value for seq, event in events for value in (seq, event)]
