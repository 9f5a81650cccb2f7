"""A response id a gateway chose (store_response's "response_id"): the alias of the id the store minted, on
every backend, a Redis Cluster's included (the alias lives in a slot of its own, found from the chosen id)."""

from __future__ import annotations

import os

from sidecar.store.aliases import AliasedStore
from sidecar.store.base import Turn
from tests.store.conftest import Backend

TENANT = "acme"


async def test_an_alias_is_claimed_once_set_resolved_and_dropped_only_while_claimed(backend: Backend) -> None:
    store = backend.store
    alias = f"gw-{os.urandom(3).hex()}"
    assert await store.resolve_alias(TENANT, alias) is None
    assert await store.claim_alias(TENANT, alias, "key-1") is None
    assert await store.claim_alias(TENANT, alias, "") == ("?", "key-1")  # claimed, by its owner, writing
    assert await store.resolve_alias(TENANT, alias) is None  # not yet a response
    await store.settle_alias(TENANT, alias, None, "key-1")  # the write failed: given back
    assert await store.claim_alias(TENANT, alias, "key-2") is None
    stored = await store.append_turn(
        Turn(
            TENANT,
            f"conv-{alias}",
            [(f"msg_{alias}", b'{"id":"msg_x","type":"message"}')],
            0,
            mint_response=True,
        )
    )
    assert stored.response_id is not None
    await store.settle_alias(TENANT, alias, stored.response_id, "key-2")
    assert await store.resolve_alias(TENANT, alias) == stored.response_id
    assert await store.claim_alias(TENANT, alias, "key-2") == (stored.response_id, "key-2")
    await store.settle_alias(TENANT, alias, None, "key-2")  # no longer a claim: a drop leaves it
    assert await store.resolve_alias(TENANT, alias) == stored.response_id
    assert await store.resolve_alias("globex", alias) is None  # per tenant

    aliased = AliasedStore(store)
    history = await aliased.resolve_response(TENANT, alias)
    assert history is not None and history.response_id == alias and history.conversation_id == f"conv-{alias}"
    assert await aliased.delete_response(TENANT, alias)
    assert await aliased.resolve_response(TENANT, alias) is None
