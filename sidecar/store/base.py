"""The Store protocol and its plain data shapes; backends keep docs/api.md §5 semantics identically."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Range = Literal["full", "input", "output"]

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# How long an idempotency key stays claimed by a request still running, and a record index reserved in a
# conversation that does not exist yet; the request renews both (renew_turn) every CLAIM_RENEW_SECONDS. A
# sidecar that dies mid-request stops renewing, so its key is free within a minute: a retry waits up to 30 s
# for a claimed key and then gets 409, and its next try runs.
CLAIM_SECONDS = 60
CLAIM_RENEW_SECONDS = 15.0


class ParentNotFound(Exception):
    """The response a turn chains from is unknown, deleted, expired or another tenant's."""


class ParentInOtherConversation(Exception):
    """The parent response belongs to another conversation than the one named."""


class ConversationMissing(Exception):
    """A write that must not create the conversation found none."""


class Conflict(Exception):
    """If-Match named a version the conversation has moved past."""

    def __init__(self, current_version: int) -> None:
        super().__init__(current_version)
        self.current_version = current_version


class IdempotencyKeyReused(Exception):
    """The same idempotency key came with another request body."""


class IdempotencyInFlight(Exception):
    """A request with the same idempotency key is still running."""


class StoreDown(Exception):
    """The backend cannot be reached."""


class ReservationLapsed(RuntimeError):
    """A turn's response id is not (or no longer) reserved: its record index lapsed while the store was away,
    or a retry holding the same idempotency key took it over. Nothing is stored."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One atomic write: items (inputs first, then outputs) and optionally the response they form."""

    tenant: str
    conversation_id: str  # "" = the parent response's conversation
    items: list[tuple[str, bytes]]  # (item id, normalised item bytes)
    n_input: int
    parent_response_id: str | None = None  # chain after this response instead of the head
    response_id: str | None = None  # a response id from begin_turn (its record index is reserved)
    mint_response: bool = False  # record a response and let the store mint its id (session API)
    response_body: bytes = b""
    response_status: str = "completed"
    if_match: int | None = None
    idempotency_key: str | None = None
    request_hash: str = ""
    create: bool = True
    conversation_metadata: bytes = b""
    # Appending at a conversation's head: the incarnation (History.incarnation) the turn was planned in. A
    # conversation deleted meanwhile, or deleted and made again under its id, is ConversationMissing: the
    # turn is not stored into it. "" = no check (a new conversation, the session API's appends).
    planned_incarnation: str = ""


@dataclass(frozen=True, slots=True)
class TurnResult:
    conversation_id: str
    version: int
    appended: int
    session_bytes: int
    turns: int
    response_id: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """An idempotency key a turn claims before the engine is called, so one key makes one engine call."""

    key: str
    request_hash: str
    fresh: bool = False  # the turn must start its conversation (whose id derives from the key)


@dataclass(slots=True)
class History:
    """Resolved history: item bytes exactly as stored, oldest first, with conversation counters."""

    conversation_id: str
    response_id: str | None
    version: int
    session_bytes: int
    turns: int
    created_ms: int
    updated_ms: int
    status: str
    body: bytes  # the response's stored body ("resp" lookups) or the conversation metadata
    items: list[bytes] = field(default_factory=list)
    summary_bytes: int = 0  # what the conversation's stored summaries hold (counted in its tenant's usage)
    # The conversation's stored summaries (block key -> text) as the resolve found them, for folding this
    # history without another round trip; None when not read (an "input" or "output" range).
    summaries: dict[str, bytes] | None = None
    # Which life of the conversation this is: made again under the same id after a delete, it differs.
    incarnation: str = ""

    @property
    def stored_bytes(self) -> int:
        """What the conversation holds for its tenant's `stored_bytes` quota: its items and its summaries."""
        return self.session_bytes + self.summary_bytes


@dataclass(frozen=True, slots=True)
class StoredSummary:
    """The summary stored for a block after add_summary, and whether this write stored it (append-only: only
    the first write for a block does, and only it adds to the tenant's stored bytes)."""

    text: bytes
    written: bool


@dataclass(frozen=True, slots=True)
class RateDecision:
    """One request against a requests-per-minute limit: whether it may pass, how many more may now, and
    in how many ms the limit is whole again (allowed) or the next request may pass (refused)."""

    allowed: bool
    remaining: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Usage:
    """What a tenant has stored: bytes of conversation items and stored summaries, and conversations."""

    stored_bytes: int
    conversations: int


@dataclass(slots=True)
class Begun:
    """What a new turn continues (None when unknown or new), the id its response will have (reserved),
    and, when its idempotency key was used before, the stored result of that first request."""

    history: History | None
    response_id: str
    replay: TurnResult | None = None


# -- background runs (sidecar/runs/) -------------------------------------------------------------------------

RUN_TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})
# The event log keeps this many events at most (Redis: MAXLEN ~); a longer run resumes from what is left.
RUN_EVENTS_MAX = 100_000


@dataclass(frozen=True, slots=True)
class RunSignal:
    """What the store tells a runner each time it writes: whether it still owns the run (a reaper takes over
    a run whose lease lapsed) and whether a cancel was asked for."""

    owned: bool
    cancel: bool


@dataclass(frozen=True, slots=True)
class RunState:
    """A background run as stored: `status` queued / in_progress / a terminal one; `record` the bytes it was
    started with (opaque to the store); `events` the logged events after the asked sequence number."""

    status: str
    record: bytes
    cancel: bool
    owner: str
    leased: bool
    last_seq: int
    events: list[bytes] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in RUN_TERMINAL


class Store(Protocol):
    async def append_turn(self, turn: Turn) -> TurnResult: ...

    async def resolve_response(
        self, tenant: str, response_id: str, range_: Range = "full"
    ) -> History | None: ...

    async def resolve_conversation(self, tenant: str, conversation_id: str) -> History | None: ...

    async def begin_turn(
        self,
        tenant: str,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        claim: Claim | None = None,
    ) -> Begun:
        """Resolve what a new turn continues, reserve its response id and claim its idempotency key, in
        one round trip. A key used before with another body raises IdempotencyKeyReused, one still
        claimed by a running request IdempotencyInFlight; one used with this body gives `replay`."""
        ...

    async def abandon_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None = None
    ) -> None:
        """Give back what begin_turn took for a turn that stores nothing: its record index, and its
        idempotency claim so a retry can run."""
        ...

    async def delete_response(self, tenant: str, response_id: str) -> bool: ...

    async def set_conversation_metadata(self, tenant: str, conversation_id: str, metadata: bytes) -> bool: ...

    async def remove_item(self, tenant: str, conversation_id: str, item_id: str) -> int | None:
        """Drop an item from the conversation's current history; the new version, or None when the
        conversation or the item is unknown. Stored responses keep their own history."""
        ...

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool: ...

    async def conversation_exists(self, tenant: str, conversation_id: str) -> bool:
        """Whether the conversation lives, without refreshing its expiry (for quota reconciliation)."""
        ...

    # Summaries of folded turns (sidecar/context/summarisers.py): in the conversation's slot, expiring and
    # deleted with it; append-only, so every replica sends the same bytes for a block once one is stored.
    async def add_summary(
        self, tenant: str, conversation_id: str, block: str, text: bytes
    ) -> StoredSummary | None:
        """Store `text` as the summary of `block` unless one is stored already: the stored one (this, or
        the first), or None when the conversation is unknown (nothing stored). The conversation's
        `summary_bytes` grows by what is written."""
        ...

    async def read_summaries(self, tenant: str, conversation_id: str, keys: list[str]) -> list[bytes | None]:
        """The stored summary of each block key, None where none is (or the conversation is unknown)."""
        ...

    # Per-tenant quotas: shared by every replica on Redis, in-process on memory.
    async def take_request(self, tenant: str, per_minute: int) -> RateDecision: ...

    async def account_usage(self, tenant: str, conversation_id: str, op: str, stored_bytes: int = 0) -> Usage:
        """`add` bytes to a conversation's count, `set` it, or `drop` the conversation: the tenant's usage."""
        ...

    async def usage(self, tenant: str) -> tuple[Usage, list[str]]:
        """The tenant's usage and the conversations it counts."""
        ...

    async def ping(self) -> None: ...

    # A response id a gateway chose (store_response's "response_id"): an alias of the id the store minted.
    async def claim_alias(self, tenant: str, alias: str, owner: str) -> tuple[str, str] | None:
        """Take `alias` for a response about to be stored by `owner` (a request's idempotency key and body;
        "" for none), for a claim's life: None when taken, else who holds it (the minted id, or "?" while
        its write runs, and its owner), so a retry of that request is told apart from another."""
        ...

    async def settle_alias(self, tenant: str, alias: str, response_id: str | None, owner: str) -> None:
        """The claimed alias now names `response_id` (for the TTL, refreshed by each use), or, None, is
        given back because the write failed."""
        ...

    async def resolve_alias(self, tenant: str, alias: str) -> str | None:
        """The minted id `alias` names (its life refreshed), or None."""
        ...

    async def shared_secret(self, name: str) -> bytes:
        """A random secret every replica on this store shares (made by the first to ask, never expiring):
        the compaction tokens' key when the policy file sets none."""
        ...

    async def close(self) -> None: ...

    # Background runs (sidecar/runs/): on Redis one Lua script each, in the run's own slot.
    async def start_run(
        self, tenant: str, response_id: str, record: bytes, owner: str, lease_ms: int
    ) -> bool:
        """Create the run `queued`, leased to `owner`; False if a run with this id exists already."""
        ...

    async def append_run_events(
        self, response_id: str, owner: str, events: list[tuple[int, bytes]], lease_ms: int
    ) -> RunSignal:
        """Log `(sequence number, event bytes)` (numbers already logged are skipped, so a retry doubles
        nothing), mark the run in_progress when there are events, and renew the lease; only by its owner."""
        ...

    async def finish_run(
        self, response_id: str, owner: str, status: str, events: list[tuple[int, bytes]]
    ) -> bool:
        """Log the last events, set the terminal status and drop the lease; only by its owner."""
        ...

    async def read_run(self, tenant: str, response_id: str, after: int | None = None) -> RunState | None:
        """The run (None when unknown or another tenant's) and, unless `after` is None, its logged events
        with a sequence number above `after`."""
        ...

    async def cancel_run(self, tenant: str, response_id: str) -> str | None:
        """Ask a running run to stop (its runner sees the flag on its next write); the run's status, or
        None when unknown or another tenant's."""
        ...

    async def take_over_run(self, response_id: str, owner: str, lease_ms: int) -> tuple[str, str]:
        """A reaper's claim on a run whose lease lapsed: ("taken", tenant) makes `owner` its owner;
        otherwise ("alive" | "done" | "missing", "")."""
        ...

    async def track_run(self, response_id: str, check_at_ms: int | None) -> None:
        """Index a running run for the reapers, due at `check_at_ms` (unix ms); None drops it."""
        ...

    async def due_runs(self, now_ms: int, limit: int) -> list[str]:
        """Indexed runs due for a lease check at `now_ms`."""
        ...

    async def renew_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None
    ) -> bool:
        """Extend a running turn's reserved record index and idempotency claim to a claim's life from now
        (never shorten them), and refresh the conversation it continues as a use does; whether the index is
        still reserved."""
        ...

    async def hold_run_slot(
        self, tenant: str, response_id: str, limit: int, stale_ms: int
    ) -> tuple[bool, int]:
        """Take (or, already held, refresh) one of the tenant's `limit` slots for background responses
        running at once, stale after `stale_ms` unless held again; `limit` 0 only refreshes. Whether it is
        held, and how many the tenant holds."""
        ...

    async def release_run_slot(self, tenant: str, response_id: str) -> int:
        """Release a run's slot (harmless twice); how many the tenant still holds."""
        ...
