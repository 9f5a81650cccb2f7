"""The Redis backend's keys outside every conversation, each in a slot of its own: the aliases of gateways'
response ids (store_response's "response_id") and the secrets every replica shares."""

from __future__ import annotations

import os
from typing import Any

from ..keys import alias_key, secret_key
from .redis_runs import Script, as_bytes, text


class RedisShared:
    """Mixed into RedisStore, whose scripts and retrying `_run` these use."""

    _ttl: int
    _claim_ttl: int
    _alias: Script
    _shared_secret: Script

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        raise NotImplementedError

    async def claim_alias(self, tenant: str, alias: str, owner: str) -> tuple[str, str] | None:
        args = ["claim", "", owner, self._claim_ttl]
        held = text(await self._run(self._alias, [alias_key(tenant, alias)], args))
        if not held:
            return None
        minted, _, holder = held.partition("\n")
        return minted, holder

    async def settle_alias(self, tenant: str, alias: str, response_id: str | None, owner: str) -> None:
        mode = "set" if response_id else "drop"
        await self._run(self._alias, [alias_key(tenant, alias)], [mode, response_id or "", owner, self._ttl])

    async def resolve_alias(self, tenant: str, alias: str) -> str | None:
        minted = await self._run(self._alias, [alias_key(tenant, alias)], ["get", "", "", self._ttl])
        return text(minted) if minted else None

    async def shared_secret(self, name: str) -> bytes:
        return as_bytes(await self._run(self._shared_secret, [secret_key(name)], [os.urandom(32)]))
