"""One stateful turn: the history it continues, the ids it mints, and its single write to the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import InvalidRequest, conversation_not_found, previous_response_not_found
from .ids import (
    UNSTORED_INDEX,
    conversation_id_for_idempotency_key,
    conversation_tag,
    mint_conversation_id,
    mint_in_conversation,
    mint_response_id,
    tag_of_minted_id,
)
from .normalise import canonical_json_text, encode_item
from .response_record import compact_record
from .store import History, Store, Turn, TurnResult
from .store.base import (
    CLAIM_RENEW_SECONDS,
    Begun,
    Claim,
    Conflict,
    ConversationMissing,
    IdempotencyInFlight,
    ParentNotFound,
)
from .stored_items import with_sidecar_ids

_log = logging.getLogger("convostore")
# How long a retry waits for the request holding its idempotency key before it is answered 409.
CLAIM_WAIT_SECONDS = 30.0


@dataclass(slots=True)
class TurnPlan:
    tenant: str
    conversation_id: str
    tag: str
    previous_response_id: str | None
    in_conversation: bool  # the client named a conversation: the turn is appended at its head
    history: list[bytes]  # stored item bytes, oldest first, never re-encoded
    version: int
    response_id: str
    input_items: list[tuple[str, bytes]] = field(default_factory=list)
    create: bool = True  # a write may create the conversation (never one the client named and must exist)
    claim: Claim | None = None  # the idempotency key this turn holds until it is stored or given back
    reserved: bool = False  # begin_turn reserved the response's record index
    replay: TurnResult | None = None  # the key was used before with this body: its first result
    recorded: bool = False
    summaries: dict[str, bytes] | None = None  # the stored summaries the resolve brought (None: not resolved)
    incarnation: str = ""  # the conversation's, when it existed at planning: its turn is stored in that one
    if_match: int | None = None  # the version the client wrote on (If-Match): the store checks it again
    fingerprint: str = ""  # the prompt's prefix fingerprint, kept in the record for a replay to report

    def mint(self, prefix: str) -> str:
        return mint_in_conversation(prefix, self.tag)

    @property
    def history_bytes(self) -> int:
        return sum(len(i) for i in self.history) + sum(len(b) for _, b in self.input_items)


async def plan_turn(
    store: Store,
    tenant: str,
    *,
    previous_response_id: str | None,
    conversation_id: str | None,
    idempotency_key: str | None,
    new_items: list[dict[str, Any]],
    request_hash: str = "",
    create_conversation: bool = False,
    will_store: bool = True,
    if_match: int | None = None,
) -> TurnPlan:
    """Resolve the history, reserve the new response's id and claim the idempotency key (one store round
    trip), mint the input's item ids. A named conversation must exist unless `create_conversation`
    (stateful chat names its own ids). A turn that will not be stored reserves nothing: its id can never
    be fetched or chained. When the key was used before, `plan.replay` holds the first result. `if_match`
    (If-Match): the conversation's version the turn is written on, checked now (Conflict, before the engine
    is called) and again when the turn is stored."""
    in_conversation = previous_response_id is None and conversation_id is not None
    minted_conversation = previous_response_id is None and conversation_id is None
    claim = None
    if idempotency_key and will_store:
        claim = Claim(idempotency_key, request_hash, fresh=minted_conversation)
    if minted_conversation:
        conversation_id = (
            conversation_id_for_idempotency_key(tenant, idempotency_key)
            if idempotency_key
            else mint_conversation_id()
        )
    history: History | None = None
    reserved = False
    if will_store and (claim is not None or not minted_conversation):
        begun = await _begin_turn(
            store,
            tenant,
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            claim=claim,
        )
        if begun.replay is not None:
            return _replay_plan(tenant, begun.replay, previous_response_id, in_conversation)
        history, response_id, reserved = begun.history, begun.response_id, bool(begun.response_id)
    elif previous_response_id is not None:
        history = await store.resolve_response(tenant, previous_response_id)
    elif in_conversation:
        assert conversation_id is not None
        history = await store.resolve_conversation(tenant, conversation_id)
    try:
        if previous_response_id is not None:
            if history is None:
                raise previous_response_not_found(previous_response_id)
            conversation_id = history.conversation_id
            # Its conversation's slot (every id minted in it carries this tag), whether the client named
            # the response by the store's id or by an alias a gateway chose (store/aliases.py).
            tag = conversation_tag(tenant, conversation_id)
        else:
            assert conversation_id is not None
            if history is None and in_conversation and not create_conversation:
                raise conversation_not_found(conversation_id)
            tag = conversation_tag(tenant, conversation_id)
        if not will_store:
            response_id = mint_response_id(tag, UNSTORED_INDEX)
        elif minted_conversation and claim is None:
            # A new conversation owns its slot (48-bit tag), so its first record index is 0: no round trip.
            response_id = mint_response_id(tag, 0)
        plan = TurnPlan(
            tenant,
            conversation_id,
            tag,
            previous_response_id,
            in_conversation,
            history.items if history else [],
            history.version if history else 0,
            response_id,
        )
        if if_match is not None and if_match != plan.version:
            raise Conflict(plan.version)
        plan.if_match = if_match
        plan.create = create_conversation or not in_conversation
        plan.claim = claim
        plan.reserved = reserved
        plan.summaries = history.summaries if history is not None else {}
        plan.incarnation = history.incarnation if history is not None else ""
        plan.input_items = with_sidecar_ids(
            _dereference(new_items, plan.history), plan.tag, history=plan.history
        )
        return plan
    except BaseException:
        if reserved:  # refused after the round trip (unknown conversation or item): give back what it took
            await _give_back(store, tenant, conversation_id or "", response_id, claim)
        raise


async def _begin_turn(
    store: Store,
    tenant: str,
    *,
    previous_response_id: str | None,
    conversation_id: str | None,
    claim: Claim | None,
) -> Begun:
    """begin_turn; a retry racing the request that holds its key waits for that one to finish (and then
    replays its answer), so one key makes one engine call and every caller gets the same response."""
    delay, deadline = 0.02, time.monotonic() + CLAIM_WAIT_SECONDS
    while True:
        try:
            return await store.begin_turn(
                tenant,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                claim=claim,
            )
        except IdempotencyInFlight:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def _replay_plan(
    tenant: str, replay: TurnResult, previous_response_id: str | None, in_conversation: bool
) -> TurnPlan:
    conversation_id = replay.conversation_id
    tag = conversation_tag(tenant, conversation_id)
    plan = TurnPlan(
        tenant, conversation_id, tag, previous_response_id, in_conversation, [], 0, replay.response_id or ""
    )
    plan.replay = replay
    return plan


@contextlib.asynccontextmanager
async def turn_settled(store: Store, plan: TurnPlan, *, renew: bool = True) -> AsyncIterator[None]:
    """Around everything after planning: a turn that ends without being stored (the engine refused or
    failed before answering) gives back its record index and its idempotency key, so a retry can run.
    Meanwhile, with `renew`, what lapses after a claim's life, or the TTL, is renewed (see _keep_turn)."""
    keeper: asyncio.Task[None] | None = None

    def keep() -> None:
        nonlocal keeper
        keeper = asyncio.create_task(_keep_turn(store, plan))

    # Most turns end before the first renewal is due: they pay for a timer, not a task.
    due = None
    if renew and plan.reserved and plan.replay is None:
        due = asyncio.get_running_loop().call_later(CLAIM_RENEW_SECONDS, keep)
    try:
        yield
    finally:
        if due is not None:
            due.cancel()
        if keeper is not None:
            keeper.cancel()
        if plan.reserved and not plan.recorded and plan.replay is None:
            await _give_back(store, plan.tenant, plan.conversation_id, plan.response_id, plan.claim)


async def _keep_turn(store: Store, plan: TurnPlan) -> None:
    """An idempotency claim, and a record index reserved in a conversation that does not exist yet, last a
    claim's life (CLAIM_SECONDS, short so that a sidecar that dies frees them soon); the conversation a turn
    continues lasts the TTL from its last use. Renewed while the turn runs, a generation longer than either
    still stores its turn and a retry still waits for it."""
    while True:
        try:
            await store.renew_turn(plan.tenant, plan.conversation_id, plan.response_id, plan.claim)
        except Exception:  # the store is away: the next renewal retries, well within a claim's life
            _log.warning("could not renew a running turn", extra={"conversation_id": plan.conversation_id})
        await asyncio.sleep(CLAIM_RENEW_SECONDS)


async def _give_back(
    store: Store, tenant: str, conversation_id: str, response_id: str, claim: Claim | None
) -> None:
    try:
        await asyncio.shield(store.abandon_turn(tenant, conversation_id, response_id, claim))
    except Exception:  # both lapse by themselves; the request's own outcome matters more
        _log.warning("could not give back an unused turn", extra={"conversation_id": conversation_id})


def _dereference(items: list[dict[str, Any]], history: list[bytes]) -> list[dict[str, Any]]:
    """`item_reference` items become copies of the stored items they name."""
    if not any(i.get("type") == "item_reference" for i in items):
        return items
    by_id = {stored["id"]: stored for stored in map(orjson.loads, history) if "id" in stored}
    resolved = []
    for n, item in enumerate(items):
        if item.get("type") != "item_reference":
            resolved.append(item)
            continue
        target = by_id.get(item["id"])
        if target is None:
            raise InvalidRequest(f"Item with id '{item['id']}' not found.", param=f"input[{n}].id")
        resolved.append({k: v for k, v in target.items() if k != "id"})
    return resolved


def stored_output(items: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """Output items as stored: function-call arguments canonical so the next prompt's bytes are stable."""
    stored = []
    for item in items:
        if item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
            item["arguments"] = canonical_json_text(item["arguments"])
        stored.append((item["id"], encode_item(item)))
    return stored


async def record_turn(
    store: Store,
    plan: TurnPlan,
    output: list[tuple[str, bytes]],
    *,
    response_body: bytes,
    status: str,
    idempotency_key: str | None = None,
    request_hash: str = "",
) -> TurnResult:
    result = await store.append_turn(
        Turn(
            tenant=plan.tenant,
            conversation_id=plan.conversation_id if plan.previous_response_id is None else "",
            items=[*plan.input_items, *output],
            n_input=len(plan.input_items),
            parent_response_id=plan.previous_response_id,
            response_id=plan.response_id,
            response_body=response_body,
            response_status=status,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            create=plan.create,
            if_match=plan.if_match,
            planned_incarnation=plan.incarnation if plan.previous_response_id is None else "",
        )
    )
    plan.recorded = True
    return result


async def record_response(
    store: Store,
    plan: TurnPlan,
    final: dict[str, Any],
    *,
    idempotency_key: str | None,
    request_hash: str,
) -> TurnResult:
    """Store a finished (or failed, or cut) response: its input and output items and its record."""
    return await record_turn(
        store,
        plan,
        stored_output(final["output"]),
        response_body=compact_record(final, plan.fingerprint),
        status=final["status"],
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


def plan_continuation(
    tenant: str,
    previous_response_id: str,
    *,
    conversation_id: str,
    history: list[bytes],
    version: int,
    new_items: list[dict[str, Any]],
    reserved_id: str | None = None,
) -> TurnPlan:
    """A turn continuing a response whose history the caller holds already (WebSocket mode keeps the one
    it just produced), with no store round trip: stored under `reserved_id` (a record index begin_turn
    reserved beforehand), or, without one, not stored (`store: false`)."""
    tag = tag_of_minted_id(previous_response_id)
    assert tag is not None  # the caller's own response: the sidecar minted it
    response_id = reserved_id or mint_response_id(tag, UNSTORED_INDEX)
    plan = TurnPlan(tenant, conversation_id, tag, previous_response_id, False, history, version, response_id)
    plan.reserved = reserved_id is not None
    plan.input_items = with_sidecar_ids(_dereference(new_items, history), tag, history=history)
    return plan


# A stream whose turn could not be stored ends with this instead of its success (an error event or chunk).
NOT_STORED = "The conversation store is unavailable: this answer was not stored; retry the request."


async def save_quietly(save: Callable[[dict[str, Any]], Awaitable[Any]], final: dict[str, Any]) -> str | None:
    """Store a streamed turn: None once it is stored, else why it was not. The client already has (part of)
    its answer, so the caller ends the stream with that error instead of its success."""
    try:
        result = await save(final)
    except Conflict as exc:  # the client's race, not our failure: said, and logged at info
        reason = f"The conversation moved to version {exc.current_version}; If-Match did not match"
    except ConversationMissing:
        reason = "The conversation was deleted while this answer was generated"
    except ParentNotFound:
        reason = "The previous response was deleted while this answer was generated"
    except Exception:
        _log.exception("storing the streamed turn failed (response %s)", final.get("id"))
        return NOT_STORED
    else:
        if not (isinstance(result, TurnResult) and result.replayed):
            return None
        # The key's claim had lapsed and its retry stored first: this stream's id was never stored.
        reason = f"A request with the same Idempotency-Key was stored first, as {result.response_id}"
    _log.info("the streamed turn was not stored (response %s): %s", final.get("id"), reason)
    return f"{reason}: this answer was not stored."
