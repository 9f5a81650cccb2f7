"""Response ids a gateway chose (store_response's "response_id", CONTRACT §2) resolve to the ids the store
minted: every call that takes a response id from a client asks the alias first when the id is not one the
store minted (one more round trip, for such ids only: a minted id names its own slot)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..ids import is_client_id, parse_response_id
from .base import Begun, Claim, History, Range, Store, Turn, TurnResult


class AliasedStore:
    """Wraps a backend; every other call passes through unchanged."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def minted(self, tenant: str, response_id: str) -> str:
        """The store's id for `response_id`: itself when the store minted it (or it names nothing)."""
        if not _may_be_alias(response_id):
            return response_id
        return await self._inner.resolve_alias(tenant, response_id) or response_id

    async def resolve_response(self, tenant: str, response_id: str, range_: Range = "full") -> History | None:
        if not _may_be_alias(response_id):  # the hot path: a minted id, passed on as it is
            return await self._inner.resolve_response(tenant, response_id, range_)
        minted = await self.minted(tenant, response_id)
        history = await self._inner.resolve_response(tenant, minted, range_)
        if history is None or minted == response_id:
            return history
        return dataclasses.replace(history, response_id=response_id)  # as the client named it

    async def begin_turn(
        self,
        tenant: str,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        claim: Claim | None = None,
    ) -> Begun:
        if previous_response_id is not None and _may_be_alias(previous_response_id):
            previous_response_id = await self.minted(tenant, previous_response_id)
        return await self._inner.begin_turn(
            tenant, previous_response_id=previous_response_id, conversation_id=conversation_id, claim=claim
        )

    async def append_turn(self, turn: Turn) -> TurnResult:
        if turn.parent_response_id is not None and _may_be_alias(turn.parent_response_id):
            parent = await self.minted(turn.tenant, turn.parent_response_id)
            turn = dataclasses.replace(turn, parent_response_id=parent)
        return await self._inner.append_turn(turn)

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        return await self._inner.delete_response(tenant, await self.minted(tenant, response_id))


def _may_be_alias(response_id: str) -> bool:
    """Not an id the store minted, and shaped like one a gateway may choose."""
    return parse_response_id(response_id) is None and is_client_id(response_id)
