"""How long a run's lease lasts and how often it is renewed and checked: the bound on an orphan's wait.

A runner renews its lease every `RENEW_SECONDS` (and with every batch of events it logs); a replica that
dies stops renewing, its lease lapses after `LEASE_MS`, and a reaper (every replica runs one, every
`REAP_INTERVAL_SECONDS`) settles the run as `failed` with what was captured: within about
LEASE_MS + REAP_INTERVAL_SECONDS of the death, a few seconds.
"""

from __future__ import annotations

import time

from ..store.base import CLAIM_RENEW_SECONDS

LEASE_MS = 3000
RENEW_SECONDS = 0.75
REAP_INTERVAL_SECONDS = 1.0
# A run renews what outlives a lease this often: its turn's reserved record index and idempotency claim
# (they lapse after the store's CLAIM_SECONDS) and its tenant's quota slot, which is free again after
# SLOT_STALE_MS without a renewal (a reaper releases an orphan's at once; this is for all replicas dying).
TURN_RENEW_SECONDS = CLAIM_RENEW_SECONDS
SLOT_STALE_MS = 300_000
# A follower on another replica than the runner's polls the log this often (the runner's own replica
# wakes its followers at once).
POLL_SECONDS = 0.05


def now_ms() -> int:
    return int(time.time() * 1000)
