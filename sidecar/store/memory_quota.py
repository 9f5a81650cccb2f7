"""The memory backend's per-tenant quota state, by the same arithmetic as lua/take_request-1.lua and
account_usage-1.lua: a GCRA rate limit, and the bytes counted per conversation."""

from __future__ import annotations

import math
import time

from .base import RateDecision, Usage


class MemoryQuotas:
    """Mixed into MemoryStore, which holds the state below (its sweep drops lapsed rate states)."""

    _rate: dict[str, float]  # tenant -> GCRA theoretical arrival time (monotonic ms)
    _usage: dict[str, dict[str, int]]  # tenant -> conversation id -> bytes counted

    async def take_request(self, tenant: str, per_minute: int) -> RateDecision:
        interval, now = 60_000 / per_minute, time.monotonic() * 1000
        new_tat = max(self._rate.get(tenant, now), now) + interval
        allow_at = new_tat - 60_000
        if allow_at > now:
            return RateDecision(False, 0, math.ceil(allow_at - now))
        self._rate[tenant] = new_tat
        return RateDecision(True, math.floor((now - allow_at) / interval), math.ceil(new_tat - now))

    async def account_usage(self, tenant: str, conversation_id: str, op: str, stored_bytes: int = 0) -> Usage:
        counted = self._usage.setdefault(tenant, {})
        if op == "drop":
            counted.pop(conversation_id, None)
        elif op == "set":
            counted[conversation_id] = stored_bytes
        else:
            counted[conversation_id] = counted.get(conversation_id, 0) + stored_bytes
        usage = Usage(sum(counted.values()), len(counted))
        if not counted:
            del self._usage[tenant]
        return usage

    async def usage(self, tenant: str) -> tuple[Usage, list[str]]:
        counted = self._usage.get(tenant, {})
        return Usage(sum(counted.values()), len(counted)), list(counted)
