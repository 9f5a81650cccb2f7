"""CONTRACT §5 storage guarantees, run identically on every backend."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest

from sidecar.ids import conversation_tag, mint_in_conversation, mint_response_id
from sidecar.store import Turn
from sidecar.store.base import (
    Conflict,
    ConversationMissing,
    IdempotencyKeyReused,
    ParentInOtherConversation,
    ParentNotFound,
)
from tests.store.conftest import Backend

TENANT = "t1"


def conv_id() -> str:
    return f"conv_{os.urandom(8).hex()}"


def item(conv: str, text: str, tenant: str = TENANT) -> tuple[str, bytes]:
    item_id = mint_in_conversation("msg", conversation_tag(tenant, conv))
    body = {
        "id": item_id,
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    return item_id, orjson.dumps(body)


def texts(items: list[bytes]) -> list[str]:
    return [orjson.loads(i)["content"][0]["text"] for i in items]


async def chain(backend: Backend, conv: str, turns: int) -> list[str]:
    """`turns` responses chained one after another; returns their ids."""
    ids: list[str] = []
    for n in range(turns):
        result = await backend.store.append_turn(
            Turn(
                TENANT,
                conv if not ids else "",
                [item(conv, f"in{n}"), item(conv, f"out{n}")],
                n_input=1,
                parent_response_id=ids[-1] if ids else None,
                mint_response=True,
            )
        )
        assert result.response_id is not None
        ids.append(result.response_id)
    return ids


async def test_concurrent_appends_are_neither_lost_nor_doubled(backend: Backend) -> None:
    conv = conv_id()
    turns = [Turn(TENANT, conv, [item(conv, f"m{n}")], n_input=1) for n in range(200)]
    results = await asyncio.gather(*(backend.store.append_turn(t) for t in turns))
    assert sorted(r.version for r in results) == list(range(1, 201))
    history = await backend.store.resolve_conversation(TENANT, conv)
    assert history is not None
    assert history.version == 200
    assert sorted(texts(history.items)) == sorted(f"m{n}" for n in range(200))
    assert len(history.items) == 200


async def test_if_match_lets_exactly_one_concurrent_writer_win(backend: Backend) -> None:
    conv = conv_id()
    await backend.store.append_turn(Turn(TENANT, conv, [item(conv, "first")], n_input=1))
    writers = [Turn(TENANT, conv, [item(conv, f"w{n}")], n_input=1, if_match=1) for n in range(50)]
    outcomes = await asyncio.gather(*(backend.store.append_turn(t) for t in writers), return_exceptions=True)
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    conflicts = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(winners) == 1 and winners[0].version == 2
    assert len(conflicts) == 49 and all(c.current_version == 2 for c in conflicts)
    history = await backend.store.resolve_conversation(TENANT, conv)
    assert history is not None and history.version == 2 and len(history.items) == 2


async def test_idempotent_replay_under_concurrency_writes_once(backend: Backend) -> None:
    conv = conv_id()
    same = item(conv, "once")
    turns = [
        Turn(TENANT, conv, [same], n_input=1, idempotency_key="key-1", request_hash="h1") for _ in range(20)
    ]
    results = await asyncio.gather(*(backend.store.append_turn(t) for t in turns))
    assert sum(not r.replayed for r in results) == 1
    assert {r.version for r in results} == {1}
    history = await backend.store.resolve_conversation(TENANT, conv)
    assert history is not None and history.version == 1 and texts(history.items) == ["once"]
    with pytest.raises(IdempotencyKeyReused):
        await backend.store.append_turn(
            Turn(TENANT, conv, [item(conv, "other")], n_input=1, idempotency_key="key-1", request_hash="h2")
        )
    history = await backend.store.resolve_conversation(TENANT, conv)
    assert history is not None and history.version == 1


async def test_fifty_turn_chain_resolves_in_one_round_trip_and_branches_stay_apart(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 50)
    monitor = backend.monitor() if backend.server is not None else None
    history = await backend.store.resolve_response(TENANT, ids[-1])
    assert history is not None
    assert texts(history.items) == [t for n in range(50) for t in (f"in{n}", f"out{n}")]
    if monitor is not None:
        assert monitor.commands() == ["evalsha"]

    branch = (await backend.store.begin_turn(TENANT, previous_response_id=ids[9])).response_id
    await backend.store.append_turn(
        Turn(
            TENANT,
            "",
            [item(conv, "bin"), item(conv, "bout")],
            n_input=1,
            parent_response_id=ids[9],
            response_id=branch,
        )
    )
    branch2 = (await backend.store.begin_turn(TENANT, previous_response_id=branch)).response_id
    await backend.store.append_turn(
        Turn(TENANT, "", [item(conv, "bin2")], n_input=1, parent_response_id=branch, response_id=branch2)
    )
    monitor = backend.monitor() if backend.server is not None else None
    resolved = await backend.store.resolve_response(TENANT, branch2)
    if monitor is not None:
        assert monitor.commands() == ["evalsha"]
    assert resolved is not None
    expected_prefix = [t for n in range(10) for t in (f"in{n}", f"out{n}")]
    assert texts(resolved.items) == [*expected_prefix, "bin", "bout", "bin2"]
    main_line = await backend.store.resolve_response(TENANT, ids[-1])
    assert main_line is not None and main_line.items == history.items


async def test_one_round_trip_per_stored_turn(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 5)
    monitor = backend.monitor() if backend.server is not None else None
    await backend.store.append_turn(
        Turn(
            TENANT,
            "",
            [item(conv, "x"), item(conv, "y")],
            n_input=1,
            parent_response_id=ids[-1],
            mint_response=True,
        )
    )
    if monitor is not None:
        assert monitor.commands() == ["evalsha"]


async def test_input_and_output_ranges(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 3)
    full = await backend.store.resolve_response(TENANT, ids[1])
    given = await backend.store.resolve_response(TENANT, ids[1], "input")
    own = await backend.store.resolve_response(TENANT, ids[1], "output")
    assert full is not None and given is not None and own is not None
    assert texts(full.items) == ["in0", "out0", "in1", "out1"]
    assert texts(given.items) == ["in0", "out0", "in1"]
    assert texts(own.items) == ["out1"]


async def test_history_of_a_response_never_changes(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 3)
    before = await backend.store.resolve_response(TENANT, ids[0])
    await backend.store.append_turn(Turn(TENANT, conv, [item(conv, "later")], n_input=1))
    await chain(backend, conv_id(), 1)
    after = await backend.store.resolve_response(TENANT, ids[0])
    assert before is not None and after is not None and before.items == after.items


async def test_version_counts_writes(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 4)
    await backend.store.append_turn(Turn(TENANT, conv, [item(conv, "a")], n_input=1))
    history = await backend.store.resolve_conversation(TENANT, conv)
    assert history is not None and history.version == 5 and history.turns == 4
    assert ids and history.session_bytes == sum(len(i) for i in history.items)


async def test_deleting_a_response_keeps_branches_chained_from_it(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 3)
    assert await backend.store.delete_response(TENANT, ids[1])
    assert await backend.store.resolve_response(TENANT, ids[1]) is None
    assert not await backend.store.delete_response(TENANT, ids[1])
    later = await backend.store.resolve_response(TENANT, ids[2])
    assert later is not None and texts(later.items) == ["in0", "out0", "in1", "out1", "in2", "out2"]
    with pytest.raises(ParentNotFound):
        await backend.store.append_turn(
            Turn(TENANT, "", [item(conv, "x")], n_input=1, parent_response_id=ids[1])
        )


async def test_deleting_a_conversation_deletes_its_responses(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 3)
    assert await backend.store.delete_conversation(TENANT, conv)
    assert await backend.store.resolve_conversation(TENANT, conv) is None
    assert all([await backend.store.resolve_response(TENANT, r) is None for r in ids])
    assert not await backend.store.delete_conversation(TENANT, conv)


async def test_tenants_cannot_see_each_other(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 1)
    assert await backend.store.resolve_response("other", ids[0]) is None
    assert await backend.store.resolve_conversation("other", conv) is None
    assert not await backend.store.delete_response("other", ids[0])
    with pytest.raises(ParentNotFound):
        await backend.store.append_turn(
            Turn("other", "", [item(conv, "x", "other")], n_input=1, parent_response_id=ids[0])
        )
    assert await backend.store.resolve_response(TENANT, ids[0]) is not None


async def test_unknown_and_malformed_ids(backend: Backend) -> None:
    assert await backend.store.resolve_response(TENANT, "resp_nope") is None
    assert await backend.store.resolve_response(TENANT, mint_response_id("0" * 12, 3)) is None
    with pytest.raises(ParentNotFound):
        await backend.store.append_turn(
            Turn(TENANT, "", [item("c", "x")], n_input=1, parent_response_id="resp_nope")
        )


async def test_parent_from_another_conversation_is_refused(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 1)
    with pytest.raises(ParentInOtherConversation):
        await backend.store.append_turn(
            Turn(TENANT, conv_id(), [item(conv, "x")], n_input=1, parent_response_id=ids[0])
        )


async def test_create_false_requires_the_conversation(backend: Backend) -> None:
    conv = conv_id()
    with pytest.raises(ConversationMissing):
        await backend.store.append_turn(Turn(TENANT, conv, [item(conv, "x")], n_input=1, create=False))
    assert await backend.store.resolve_conversation(TENANT, conv) is None


async def test_ttl_expires_untouched_conversations(backend: Backend) -> None:
    from sidecar.store import MemoryStore, RedisStore

    store = MemoryStore(1) if backend.server is None else await RedisStore.connect(backend.server.url, 1)
    try:
        conv = conv_id()
        await store.append_turn(Turn(TENANT, conv, [item(conv, "x")], n_input=1))
        assert await store.resolve_conversation(TENANT, conv) is not None
        await asyncio.sleep(2.2)
        assert await store.resolve_conversation(TENANT, conv) is None
    finally:
        await store.close()


async def test_conversation_metadata_is_kept(backend: Backend) -> None:
    conv = conv_id()
    await backend.store.append_turn(
        Turn(TENANT, conv, [item(conv, "x")], n_input=1, conversation_metadata=b'{"k":"v"}')
    )
    history = await backend.store.resolve_conversation(TENANT, conv)
    assert history is not None and history.body == b'{"k":"v"}'


async def test_metadata_update_keeps_version(backend: Backend) -> None:
    conv = conv_id()
    await backend.store.append_turn(
        Turn(TENANT, conv, [item(conv, "x")], n_input=1, conversation_metadata=b"{}")
    )
    assert await backend.store.set_conversation_metadata(TENANT, conv, b'{"a":"b"}')
    history = await backend.store.resolve_conversation(TENANT, conv)
    assert history is not None and history.body == b'{"a":"b"}' and history.version == 1
    assert not await backend.store.set_conversation_metadata(TENANT, conv_id(), b"{}")


async def test_removing_an_item_changes_the_head_but_not_stored_responses(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 3)
    before = await backend.store.resolve_response(TENANT, ids[2])
    assert before is not None
    victim = orjson.loads(before.items[2])["id"]  # "in1"
    version = await backend.store.remove_item(TENANT, conv, victim)
    assert version == 4
    head = await backend.store.resolve_conversation(TENANT, conv)
    assert head is not None and texts(head.items) == ["in0", "out0", "out1", "in2", "out2"]
    after = await backend.store.resolve_response(TENANT, ids[2])
    assert after is not None and after.items == before.items
    assert await backend.store.remove_item(TENANT, conv, victim) is None
    await backend.store.append_turn(Turn(TENANT, conv, [item(conv, "next")], n_input=1))
    head = await backend.store.resolve_conversation(TENANT, conv)
    assert head is not None and texts(head.items)[-2:] == ["out2", "next"]
    assert await backend.store.delete_conversation(TENANT, conv)


async def test_begin_turn_resolves_and_reserves_in_one_round_trip(backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(backend, conv, 3)
    monitor = backend.monitor() if backend.server is not None else None
    begun = await backend.store.begin_turn(TENANT, previous_response_id=ids[-1])
    history, reserved = begun.history, begun.response_id
    if monitor is not None:
        assert monitor.commands() == ["evalsha"]
    assert history is not None and len(history.items) == 6
    assert reserved.startswith("resp_") and reserved not in ids
    assert await backend.store.resolve_response(TENANT, reserved) is None  # reserved, not stored yet
    result = await backend.store.append_turn(
        Turn(TENANT, "", [item(conv, "next")], n_input=1, parent_response_id=ids[-1], response_id=reserved)
    )
    assert result.response_id == reserved
    stored = await backend.store.resolve_response(TENANT, reserved)
    assert stored is not None and texts(stored.items)[-1] == "next"
    new = await backend.store.begin_turn(TENANT, conversation_id=conv_id())
    assert new.history is None and new.response_id.startswith("resp_")


async def test_a_response_id_that_was_not_reserved_writes_nothing(backend: Backend) -> None:
    conv = conv_id()
    forged = mint_response_id(conversation_tag(TENANT, conv), 7)
    with pytest.raises(RuntimeError):
        await backend.store.append_turn(Turn(TENANT, conv, [item(conv, "x")], n_input=1, response_id=forged))
    assert await backend.store.resolve_conversation(TENANT, conv) is None


async def test_if_match_on_a_new_conversation_writes_nothing(backend: Backend) -> None:
    conv = conv_id()
    with pytest.raises(Conflict):
        await backend.store.append_turn(Turn(TENANT, conv, [item(conv, "x")], n_input=1, if_match=3))
    assert await backend.store.resolve_conversation(TENANT, conv) is None


async def test_a_guessed_response_id_with_the_right_index_is_not_found(backend: Backend) -> None:
    conv = conv_id()
    [rid] = await chain(backend, conv, 1)
    guessed = rid[:-12] + ("0" * 12 if rid[-12:] != "0" * 12 else "1" * 12)
    assert await backend.store.resolve_response(TENANT, guessed) is None
    assert not await backend.store.delete_response(TENANT, guessed)
