"""Lifetimes: one shared expiry per conversation, idempotency claims, concurrent first turns, and
nothing left behind by deletes; on every backend (memory, standalone Redis, Redis Cluster)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest

from sidecar.store import MemoryStore, RedisStore, Store, Turn
from sidecar.store.base import Claim, IdempotencyInFlight, IdempotencyKeyReused, ReservationLapsed
from tests.fixtures.redis_servers import redis_call
from tests.store.conftest import Backend
from tests.store.test_store import TENANT, conv_id, item, texts

TTL = 0.5  # seconds; the model below stays clear of the boundary, so timing never decides an outcome
MARGIN = 0.15


@pytest.fixture
async def short_lived(backend: Backend) -> AsyncIterator[Store]:
    """The same backend with a TTL of half a second."""
    store: Store = (
        MemoryStore(TTL) if backend.server is None else await RedisStore.connect(backend.server.url, TTL)
    )
    try:
        yield store
    finally:
        await store.close()


def redis_keys(backend: Backend) -> list[tuple[int, str]]:
    """(port of the node holding it, key) for every key on the backend's servers."""
    ports = getattr(backend.server, "ports", None) or [backend.server.port]
    keys: list[tuple[int, str]] = []
    for port in ports:
        reply = redis_call(port, "KEYS", "*")
        assert isinstance(reply, list)
        keys += [(port, k.decode() if isinstance(k, bytes) else str(k)) for k in reply]
    return keys


def assert_store_empty(backend: Backend) -> None:
    if backend.server is not None:
        assert redis_keys(backend) == []
        return
    store = backend.store
    assert isinstance(store, MemoryStore)
    assert store._conversations == {} and store._responses == {}
    assert store._idempotency == {} and store._slots == {}


# -- the expiry property: a model of conversations under a tiny TTL ------------------------------


@dataclass
class ModelConversation:
    head: list[str] = field(default_factory=list)  # item texts of the current head
    touched: float = 0.0  # monotonic time of the last use that refreshed it
    responses: list[str] = field(default_factory=list)


@dataclass
class Model:
    conversations: dict[str, ModelConversation] = field(default_factory=dict)
    histories: dict[str, list[str]] = field(default_factory=dict)  # response id -> its whole history
    conversation_of: dict[str, str] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)  # ids that must stay 404 forever

    def kill(self, conv: str) -> None:
        for rid in self.conversations.pop(conv).responses:
            self.histories.pop(rid, None)
            self.dead.add(rid)


async def settle(model: Model) -> None:
    """Sleep past the expiry of any conversation too close to it, then drop what expired."""
    now = time.monotonic()
    waits = [
        TTL + MARGIN - (now - c.touched)
        for c in model.conversations.values()
        if now - c.touched > TTL - MARGIN
    ]
    if waits:
        await asyncio.sleep(max(waits))
    now = time.monotonic()
    for conv in [k for k, c in model.conversations.items() if now - c.touched > TTL]:
        model.kill(conv)


async def run_sequence(store: Store, seed: int, steps: int) -> None:
    rng = random.Random(seed)
    model = Model()
    pool = [conv_id() for _ in range(3)]  # few ids, so deleted and expired ones are made again
    counter = 0

    async def check(rid: str) -> None:
        history = await store.resolve_response(TENANT, rid)
        expected = model.histories.get(rid)
        if expected is None:
            assert history is None, f"seed {seed}: {rid} resolved after it was deleted or expired"
            return
        assert history is not None, f"seed {seed}: live {rid} did not resolve"
        assert texts(history.items) == expected, f"seed {seed}: {rid} resolved to another history"
        model.conversations[model.conversation_of[rid]].touched = time.monotonic()

    for _ in range(steps):
        await settle(model)
        op = rng.choice(["new", "chain", "chain", "append", "read", "read", "read_conv", "delete_response",
                         "delete_conv", "remove", "sleep_short", "sleep_long"])  # fmt: skip
        counter += 1
        live = list(model.histories)
        if op == "new" or (op in ("chain", "read", "delete_response") and not live):
            conv = rng.choice(pool)
            if conv in model.conversations:
                continue
            result = await store.append_turn(
                Turn(
                    TENANT,
                    conv,
                    [item(conv, f"i{counter}"), item(conv, f"o{counter}")],
                    1,
                    mint_response=True,
                )
            )
            assert result.response_id is not None
            model.conversations[conv] = ModelConversation([f"i{counter}", f"o{counter}"], time.monotonic())
            model.conversations[conv].responses.append(result.response_id)
            model.histories[result.response_id] = [f"i{counter}", f"o{counter}"]
            model.conversation_of[result.response_id] = conv
        elif op == "chain":
            parent = rng.choice(live)
            conv = model.conversation_of[parent]
            begun = await store.begin_turn(TENANT, previous_response_id=parent)
            assert begun.history is not None and texts(begun.history.items) == model.histories[parent]
            new_items = [item(conv, f"i{counter}"), item(conv, f"o{counter}")]
            await store.append_turn(
                Turn(TENANT, "", new_items, 1, parent_response_id=parent, response_id=begun.response_id)
            )
            model.histories[begun.response_id] = [*model.histories[parent], f"i{counter}", f"o{counter}"]
            model.conversation_of[begun.response_id] = conv
            state = model.conversations[conv]
            state.responses.append(begun.response_id)
            state.touched = time.monotonic()
            if model.histories[parent] == state.head:
                state.head = model.histories[begun.response_id]
            else:
                state.head = model.histories[begun.response_id]  # a branch becomes the head
        elif op == "append" and model.conversations:
            conv = rng.choice(list(model.conversations))
            result = await store.append_turn(
                Turn(TENANT, conv, [item(conv, f"a{counter}")], 1, mint_response=True)
            )
            state = model.conversations[conv]
            state.head = [*state.head, f"a{counter}"]
            state.touched = time.monotonic()
            assert result.response_id is not None
            state.responses.append(result.response_id)
            model.histories[result.response_id] = state.head
            model.conversation_of[result.response_id] = conv
        elif op == "read":
            await check(rng.choice(live + sorted(model.dead)))
        elif op == "read_conv":
            conv = rng.choice(pool)
            history = await store.resolve_conversation(TENANT, conv)
            if conv not in model.conversations:
                assert history is None, f"seed {seed}: dead conversation {conv} resolved"
            else:
                assert history is not None and texts(history.items) == model.conversations[conv].head
                model.conversations[conv].touched = time.monotonic()
        elif op == "delete_response":
            rid = rng.choice(live)
            assert await store.delete_response(TENANT, rid)
            del model.histories[rid]
            model.dead.add(rid)
        elif op == "delete_conv" and model.conversations:
            conv = rng.choice(list(model.conversations))
            assert await store.delete_conversation(TENANT, conv)
            model.kill(conv)
        elif op == "remove" and model.conversations:
            conv = rng.choice(list(model.conversations))
            state = model.conversations[conv]
            if not state.head:
                continue
            history = await store.resolve_conversation(TENANT, conv)
            assert history is not None
            state.touched = time.monotonic()
            victim = rng.randrange(len(history.items))
            assert (
                await store.remove_item(TENANT, conv, orjson.loads(history.items[victim])["id"]) is not None
            )
            state.head = state.head[:victim] + state.head[victim + 1 :]
            state.touched = time.monotonic()
        elif op == "sleep_short":
            await asyncio.sleep(0.05)
        elif op == "sleep_long":
            await asyncio.sleep(TTL + MARGIN)
        # Every id is, at every step, its whole history or 404.
        for rid in rng.sample(
            sorted(set(model.histories) | model.dead), min(3, len(model.histories) + len(model.dead))
        ):
            await settle(model)
            await check(rid)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_id_resolves_to_its_whole_history_or_404_under_a_tiny_ttl(
    short_lived: Store, seed: int
) -> None:
    await run_sequence(short_lived, seed, steps=45)


async def test_a_history_read_again_and_again_outlives_the_ttl_whole(short_lived: Store) -> None:
    """Reading r3, a branch off an old response, keeps every key it needs: main line, branch, records."""
    store = short_lived
    conv = conv_id()
    first = await store.append_turn(
        Turn(TENANT, conv, [item(conv, "q1"), item(conv, "a1")], 1, mint_response=True)
    )
    assert first.response_id is not None
    main = await store.begin_turn(TENANT, previous_response_id=first.response_id)
    await store.append_turn(Turn(TENANT, "", [item(conv, "q2")], 1, parent_response_id=first.response_id,
                                 response_id=main.response_id))  # fmt: skip
    branch = await store.begin_turn(TENANT, previous_response_id=first.response_id)
    await store.append_turn(Turn(TENANT, "", [item(conv, "q3")], 1, parent_response_id=first.response_id,
                                 response_id=branch.response_id))  # fmt: skip
    for _ in range(6):  # 1.2 s, over twice the TTL: only the main line is used
        history = await store.resolve_response(TENANT, main.response_id)
        assert history is not None and texts(history.items) == ["q1", "a1", "q2"]
        await asyncio.sleep(0.2)
    history = await store.resolve_response(TENANT, branch.response_id)
    assert history is not None and texts(history.items) == ["q1", "a1", "q3"]
    output = await store.resolve_response(TENANT, branch.response_id, "output")
    assert output is not None and output.items == []  # q3 is its input; it produced nothing


async def test_a_conversation_made_again_under_a_deleted_id_does_not_answer_for_old_ids(
    backend: Backend,
) -> None:
    store = backend.store
    conv = conv_id()
    old = await store.append_turn(Turn(TENANT, conv, [item(conv, "old")], 1, mint_response=True))
    assert old.response_id is not None
    for _ in range(3):
        await store.resolve_response(TENANT, old.response_id)
    assert await store.delete_conversation(TENANT, conv)
    new = await store.append_turn(Turn(TENANT, conv, [item(conv, "new")], 1, mint_response=True))
    assert await store.resolve_response(TENANT, old.response_id) is None
    assert new.response_id is not None and new.response_id != old.response_id
    resolved = await store.resolve_response(TENANT, new.response_id)
    assert resolved is not None and texts(resolved.items) == ["new"]


async def test_a_conversation_made_again_after_expiry_does_not_answer_for_old_ids(short_lived: Store) -> None:
    conv = conv_id()
    old = await short_lived.append_turn(Turn(TENANT, conv, [item(conv, "old")], 1, mint_response=True))
    assert old.response_id is not None
    await asyncio.sleep(TTL + MARGIN)
    new = await short_lived.append_turn(Turn(TENANT, conv, [item(conv, "new")], 1, mint_response=True))
    assert new.response_id is not None
    assert await short_lived.resolve_response(TENANT, old.response_id) is None


# -- concurrent first turns and idempotency claims ----------------------------------------------


async def test_concurrent_first_turns_on_a_new_named_conversation_are_all_stored(backend: Backend) -> None:
    store = backend.store
    conv = conv_id()
    begun = await asyncio.gather(*(store.begin_turn(TENANT, conversation_id=conv) for _ in range(20)))
    ids = [b.response_id for b in begun]
    assert all(b.history is None for b in begun) and len(set(ids)) == 20
    results = await asyncio.gather(
        *(
            store.append_turn(Turn(TENANT, conv, [item(conv, f"t{n}")], 1, response_id=rid))
            for n, rid in enumerate(ids)
        )
    )
    assert sorted(r.version for r in results) == list(range(1, 21))
    for n, rid in enumerate(ids):
        history = await store.resolve_response(TENANT, rid)
        assert history is not None and texts(history.items)[-1] == f"t{n}"
    head = await store.resolve_conversation(TENANT, conv)
    assert (
        head is not None
        and head.turns == 20
        and sorted(texts(head.items)) == sorted(f"t{n}" for n in range(20))
    )


async def test_one_idempotency_key_gives_one_run(backend: Backend) -> None:
    store = backend.store
    conv = conv_id()
    claim = Claim("key-1", "hash-a")
    outcomes = await asyncio.gather(
        *(store.begin_turn(TENANT, conversation_id=conv, claim=claim) for _ in range(10)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(winners) == 1 and all(isinstance(o, IdempotencyInFlight) for o in outcomes if o not in winners)
    with pytest.raises(IdempotencyKeyReused):  # the same key with another body, while it runs
        await store.begin_turn(TENANT, conversation_id=conv, claim=Claim("key-1", "hash-b"))
    rid = winners[0].response_id
    stored = await store.append_turn(
        Turn(
            TENANT,
            conv,
            [item(conv, "x")],
            1,
            response_id=rid,
            idempotency_key="key-1",
            request_hash="hash-a",
        )
    )
    again = await store.begin_turn(TENANT, conversation_id=conv, claim=claim)
    assert (
        again.replay is not None
        and again.replay.response_id == rid
        and again.replay.version == stored.version
    )
    with pytest.raises(IdempotencyKeyReused):
        await store.begin_turn(TENANT, conversation_id=conv, claim=Claim("key-1", "hash-b"))
    head = await store.resolve_conversation(TENANT, conv)
    assert head is not None and head.version == 1


async def test_a_released_claim_lets_the_retry_run(backend: Backend) -> None:
    store = backend.store
    conv = conv_id()
    claim = Claim("key-2", "h")
    first = await store.begin_turn(TENANT, conversation_id=conv, claim=claim)
    with pytest.raises(IdempotencyInFlight):
        await store.begin_turn(TENANT, conversation_id=conv, claim=claim)
    await store.abandon_turn(TENANT, conv, first.response_id, claim)
    retry = await store.begin_turn(TENANT, conversation_id=conv, claim=claim)
    assert retry.replay is None and retry.response_id != first.response_id
    await store.abandon_turn(TENANT, conv, retry.response_id, claim)
    assert_store_empty(backend)


async def test_a_given_back_index_handed_out_again_is_the_new_ids_only(backend: Backend) -> None:
    """A turn that gave its record index back (and, on Redis, the next turn that is handed the same index)
    must not meet a late write of the first id: the reservation is the id's, not the index's."""
    store = backend.store
    conv = conv_id()
    await store.append_turn(Turn(TENANT, conv, [item(conv, "root")], 1))
    first = await store.begin_turn(TENANT, conversation_id=conv)
    await store.abandon_turn(TENANT, conv, first.response_id)
    second = await store.begin_turn(TENANT, conversation_id=conv)
    assert second.response_id != first.response_id
    with pytest.raises(ReservationLapsed):
        await store.append_turn(Turn(TENANT, conv, [item(conv, "late")], 1, response_id=first.response_id))
    await store.append_turn(Turn(TENANT, conv, [item(conv, "mine")], 1, response_id=second.response_id))
    stored = await store.resolve_response(TENANT, second.response_id)
    assert stored is not None and texts(stored.items) == ["root", "mine"]
    assert await store.resolve_response(TENANT, first.response_id) is None


async def test_the_key_that_created_a_conversation_replays_for_its_whole_life(short_lived: Store) -> None:
    """A key whose conversation id derives from it: a reuse after a day must not continue the conversation."""
    conv = conv_id()
    claim = Claim("creator", "h", fresh=True)
    begun = await short_lived.begin_turn(TENANT, conversation_id=conv, claim=claim)
    await short_lived.append_turn(
        Turn(
            TENANT,
            conv,
            [item(conv, "x")],
            1,
            response_id=begun.response_id,
            idempotency_key="creator",
            request_hash="h",
        )
    )
    for _ in range(4):  # past the TTL, kept alive by use
        await asyncio.sleep(0.2)
        assert await short_lived.resolve_conversation(TENANT, conv) is not None
    again = await short_lived.begin_turn(TENANT, conversation_id=conv, claim=claim)
    assert again.replay is not None and again.replay.response_id == begun.response_id
    with pytest.raises(IdempotencyKeyReused):  # a conversation that exists without this key's record
        await short_lived.begin_turn(TENANT, conversation_id=conv, claim=Claim("other", "h", fresh=True))


# -- nothing left behind ------------------------------------------------------------------------


async def test_create_and_delete_cycles_leave_nothing_behind(backend: Backend) -> None:
    if backend.server is not None:
        backend.server.flushall()
    store = backend.store
    for n in range(30):
        conv = conv_id()
        first = await store.begin_turn(TENANT, conversation_id=conv, claim=Claim(f"k{n}", "h"))
        await store.append_turn(
            Turn(
                TENANT,
                conv,
                [item(conv, "a")],
                1,
                response_id=first.response_id,
                idempotency_key=f"k{n}",
                request_hash="h",
            )
        )
        chained = await store.begin_turn(
            TENANT, previous_response_id=first.response_id, claim=Claim(f"c{n}", "h")
        )
        await store.append_turn(
            Turn(TENANT, "", [item(conv, "b")], 1, parent_response_id=first.response_id,
                 response_id=chained.response_id, idempotency_key=f"c{n}", request_hash="h")
        )  # fmt: skip
        branch = await store.begin_turn(TENANT, previous_response_id=first.response_id)
        await store.append_turn(
            Turn(
                TENANT,
                "",
                [item(conv, "c")],
                1,
                parent_response_id=first.response_id,
                response_id=branch.response_id,
            )
        )
        await store.append_turn(
            Turn(TENANT, conv, [item(conv, "d")], 1, idempotency_key=f"s{n}", request_hash="h")
        )
        head = await store.resolve_conversation(TENANT, conv)
        assert head is not None
        await store.remove_item(TENANT, conv, orjson.loads(head.items[0])["id"])
        assert await store.delete_response(TENANT, chained.response_id)
        assert await store.delete_conversation(TENANT, conv)
    if isinstance(store, MemoryStore):
        store.sweep()
    assert_store_empty(backend)


async def test_removing_items_keeps_only_what_is_reachable(backend: Backend) -> None:
    store = backend.store
    conv = conv_id()
    await store.append_turn(Turn(TENANT, conv, [item(conv, f"x{n}") for n in range(100)], 100))
    for n in range(50):
        head = await store.resolve_conversation(TENANT, conv)
        assert head is not None
        victim = (n * 37) % len(head.items)
        assert await store.remove_item(TENANT, conv, orjson.loads(head.items[victim])["id"]) is not None
    head = await store.resolve_conversation(TENANT, conv)
    assert head is not None and len(head.items) == 50
    assert head.session_bytes == sum(len(i) for i in head.items)
    if backend.server is not None:
        lengths = [redis_call(port, "LLEN", key) for port, key in redis_keys(backend) if ":seg:" in key]
        assert sum(n for n in lengths if isinstance(n, int)) == 50
    else:
        assert isinstance(store, MemoryStore)
        state = store._conversations[(TENANT, conv)]
        assert sum(len(s) for s in state.segments) == 50


async def test_item_ids_are_compared_whole_never_as_substrings(backend: Backend) -> None:
    store = backend.store
    conv = conv_id()
    await store.append_turn(Turn(TENANT, conv, [item(conv, "keep")], 1))
    head = await store.resolve_conversation(TENANT, conv)
    assert head is not None
    item_id = orjson.loads(head.items[0])["id"]
    for crafted in (f'{item_id}","role":"user', item_id[:-2], f'"id":"{item_id}"', item_id + "0"):
        assert await store.remove_item(TENANT, conv, crafted) is None
    after = await store.resolve_conversation(TENANT, conv)
    assert after is not None and texts(after.items) == ["keep"]
