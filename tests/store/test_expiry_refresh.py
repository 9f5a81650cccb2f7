"""Redis refreshes a conversation's deadlines at most once per slack (1 % of the TTL, at most a minute): a
use within it runs no PEXPIRE, and no key a use creates within it is left without a deadline."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.store import RedisStore, Turn
from sidecar.store.base import Claim
from tests.fixtures.redis_servers import redis_call
from tests.store.conftest import Backend
from tests.store.test_store import TENANT, chain, conv_id, item


@pytest.fixture
def redis_backend(backend: Backend) -> Backend:
    if backend.server is None:
        pytest.skip("the memory store refreshes a conversation's deadline on every use")
    return backend


def keys_without_deadline(backend: Backend) -> list[str]:
    ports = getattr(backend.server, "ports", None) or [backend.server.port]  # type: ignore[union-attr]
    missing = []
    for port in ports:
        keys = redis_call(port, "KEYS", "cs:*")
        assert isinstance(keys, list)
        for key in keys:
            if redis_call(port, "PTTL", key) == -1:
                missing.append(key.decode() if isinstance(key, bytes) else str(key))
    return missing


async def test_keys_made_within_the_slack_get_the_conversations_deadline(redis_backend: Backend) -> None:
    store, conv = redis_backend.store, conv_id()
    first_id: list[str] = []

    async def chain_one() -> None:
        result = await store.append_turn(
            Turn(TENANT, conv, [item(conv, "in"), item(conv, "out")], n_input=1, mint_response=True)
        )
        assert result.response_id is not None
        first_id.append(result.response_id)

    async def branch() -> None:
        await store.append_turn(
            Turn(TENANT, "", [item(conv, "b")], n_input=1, parent_response_id=first_id[0], mint_response=True)
        )

    async def removal() -> None:
        removed = item(conv, "to remove")
        await store.append_turn(Turn(TENANT, conv, [removed], n_input=1))
        assert await store.remove_item(TENANT, conv, removed[0]) is not None

    # Back to back, so every use after the first falls within the slack (36 s at this TTL); each step may
    # make a key, and none may be left without a deadline.
    steps = {
        "an empty conversation": lambda: store.append_turn(
            Turn(TENANT, conv, [], n_input=0, conversation_metadata=b'{"a":"b"}')
        ),
        "its first items (the segment's key)": lambda: store.append_turn(
            Turn(TENANT, conv, [item(conv, "first")], n_input=1)
        ),
        "its first response (the responses' list)": chain_one,
        "a chained response": chain_one,
        "a branch (a new segment)": branch,
        "an idempotent append (its record and the key index)": lambda: store.append_turn(
            Turn(TENANT, conv, [item(conv, "k")], n_input=1, idempotency_key="key-1", request_hash="h")
        ),
        "a claimed key": lambda: store.begin_turn(TENANT, conversation_id=conv, claim=Claim("key-2", "h")),
        "a summary": lambda: store.add_summary(TENANT, conv, "block-0", b"a summary"),
        "a removed item (a new segment)": removal,
    }
    for step, run in steps.items():
        await run()
        assert keys_without_deadline(redis_backend) == [], step


async def test_a_use_within_the_slack_refreshes_nothing(redis_backend: Backend) -> None:
    conv = conv_id()
    ids = await chain(redis_backend, conv, 3)
    monitor = redis_backend.monitor()
    await redis_backend.store.begin_turn(TENANT, previous_response_id=ids[-1])
    await redis_backend.store.append_turn(
        Turn(TENANT, "", [item(conv, "x")], n_input=1, parent_response_id=ids[-1], mint_response=True)
    )
    in_scripts = monitor.commands(in_scripts=True)
    assert "lrange" in in_scripts  # the monitor saw the scripts' own commands
    assert "pexpire" not in in_scripts


async def test_a_use_after_the_slack_refreshes_every_key(redis_backend: Backend) -> None:
    server = redis_backend.server
    assert server is not None
    store = await RedisStore.connect(server.url, 4)  # a 40 ms slack
    try:
        conv = conv_id()
        first = await store.append_turn(
            Turn(TENANT, conv, [item(conv, "in"), item(conv, "out")], n_input=1, mint_response=True)
        )
        assert first.response_id is not None
        await asyncio.sleep(0.5)
        ports = getattr(server, "ports", None) or [server.port]
        before = _deadlines(ports, conv)
        assert before and all(0 < left <= 3500 for left in before.values())
        assert await store.resolve_response(TENANT, first.response_id) is not None
        after = _deadlines(ports, conv)
        assert after.keys() == before.keys()
        assert all(left > 3700 for left in after.values()), after
    finally:
        await store.close()


def _deadlines(ports: list[int], conv: str) -> dict[str, int]:
    """PTTL of every key of the conversation, and of its slot's record list."""
    found: dict[str, int] = {}
    for port in ports:
        keys = redis_call(port, "KEYS", f"cs:*{conv}*")
        assert isinstance(keys, list)
        for key in keys:
            name = key.decode() if isinstance(key, bytes) else str(key)
            found[name] = int(redis_call(port, "PTTL", name))  # type: ignore[arg-type]
            records = name[:18] + "rec"
            found[records] = int(redis_call(port, "PTTL", records))  # type: ignore[arg-type]
    return found
