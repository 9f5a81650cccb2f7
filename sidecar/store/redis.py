"""Redis backend: every write is one Lua script, every resolve one EVALSHA to one shard."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..ids import conversation_tag, mint_response_id, parse_response_id, response_random
from ..keys import ConversationKeys, records_key, tag_prefix
from ..redact import mask_userinfo
from .base import (
    IDEMPOTENCY_TTL_SECONDS,
    Conflict,
    ConversationMissing,
    History,
    IdempotencyKeyReused,
    ParentInOtherConversation,
    ParentNotFound,
    Range,
    StoreDown,
    Turn,
    TurnResult,
)
from .lua import load_script
from .resp_client import PipelinedRedis

MAX_CONNECTIONS = 1024
Script = Callable[..., Awaitable[Any]]
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisStore:
    """`client` is the lean PipelinedRedis on a standalone server, redis-py's RedisCluster on a cluster:
    both offer register_script, get, ping and aclose."""

    def __init__(self, client: Any, ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._append: Script = client.register_script(load_script("append_turn-2"))
        self._resolve: Script = client.register_script(load_script("resolve_history-2"))
        self._delete_response: Script = client.register_script(load_script("delete_response-2"))
        self._delete_conversation: Script = client.register_script(load_script("delete_conversation-2"))
        self._set_metadata: Script = client.register_script(load_script("set_metadata-1"))
        self._remove_item: Script = client.register_script(load_script("remove_item-2"))

    @classmethod
    async def connect(cls, url: str, ttl_seconds: int) -> RedisStore:
        """Connect, detecting a Redis Cluster by itself."""
        lean = PipelinedRedis(url)
        try:
            info = await lean.info("cluster")
        except _UNREACHABLE as exc:
            await lean.aclose()
            raise StoreDown(f"cannot reach Redis at {mask_userinfo(url)}: {exc}") from exc
        if not info.get("cluster_enabled"):
            return cls(lean, ttl_seconds)
        await lean.aclose()
        # redis-py's cluster client owns slot routing; it fails rather than waits when its pool is
        # exhausted, so size it for bursts.
        cluster = RedisCluster.from_url(url, max_connections=MAX_CONNECTIONS)
        await cluster.initialize()
        return cls(cluster, ttl_seconds)

    @property
    def client(self) -> Any:
        return self._client

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except _UNREACHABLE as exc:
            raise StoreDown(str(exc)) from exc

    async def append_turn(self, turn: Turn) -> TurnResult:
        if turn.parent_response_id is not None:
            parsed = parse_response_id(turn.parent_response_id)
            if parsed is None:
                raise ParentNotFound(turn.parent_response_id)
            tag = parsed[0]
        else:
            tag = conversation_tag(turn.tenant, turn.conversation_id)
        # "+<random>": the script takes the next record index and mints the id itself.
        response = "+" + response_random() if turn.mint_response else turn.response_id or ""
        args: list[Any] = [
            turn.tenant,
            turn.conversation_id,
            turn.idempotency_key or "",
            turn.request_hash,
            "" if turn.if_match is None else turn.if_match,
            int(time.time() * 1000),
            self._ttl,
            min(IDEMPOTENCY_TTL_SECONDS, self._ttl),
            response,
            turn.response_body,
            turn.response_status,
            "1" if turn.create else "0",
            turn.conversation_metadata,
            turn.n_input,
            turn.parent_response_id or "",
        ]
        args.extend(item for _, item in turn.items)
        reply = await self._run(self._append, [tag_prefix(tag), records_key(tag)], args)
        return _turn_result(reply, turn)

    async def resolve_response(self, tenant: str, response_id: str, range_: Range = "full") -> History | None:
        parsed = parse_response_id(response_id)
        if parsed is None:
            return None
        tag = parsed[0]
        args = ["resp", tenant, response_id, range_, self._ttl, "0"]
        return _history(await self._run(self._resolve, [records_key(tag), tag_prefix(tag)], args))

    async def resolve_conversation(self, tenant: str, conversation_id: str) -> History | None:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        args = ["conv", tenant, conversation_id, "full", self._ttl, "0"]
        return _history(await self._run(self._resolve, [conv.meta, conv.tag_prefix], args))

    async def begin_turn(
        self, tenant: str, *, previous_response_id: str | None = None, conversation_id: str | None = None
    ) -> tuple[History | None, str]:
        if previous_response_id is not None:
            parsed = parse_response_id(previous_response_id)
            if parsed is None:
                return None, ""
            tag = parsed[0]
            keys = [records_key(tag), tag_prefix(tag)]
            args = ["resp", tenant, previous_response_id, "full", self._ttl, "1"]
        else:
            assert conversation_id is not None
            tag = conversation_tag(tenant, conversation_id)
            conv = ConversationKeys(tag, tenant, conversation_id)
            keys = [conv.meta, conv.tag_prefix]
            args = ["conv", tenant, conversation_id, "full", self._ttl, "1"]
        reply = await self._run(self._resolve, keys, args)
        return _history(reply), mint_response_id(tag, int(reply[0]))

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        parsed = parse_response_id(response_id)
        if parsed is None:
            return False
        keys = [records_key(parsed[0]), tag_prefix(parsed[0])]
        return bool(await self._run(self._delete_response, keys, [tenant, response_id]))

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        keys = [conv.meta, conv.tag_prefix]
        return bool(await self._run(self._delete_conversation, keys, [tenant, conversation_id]))

    async def find_idempotent(
        self, tenant: str, conversation_id: str, key: str
    ) -> tuple[str, TurnResult] | None:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        try:
            raw = await self._client.get(conv.idempotency(key))
        except _UNREACHABLE as exc:
            raise StoreDown(str(exc)) from exc
        if raw is None:
            return None
        request_hash, *fields = raw.split(b"\n")
        return request_hash.decode(), _turn_result([b"replay", *fields], Turn(tenant, conversation_id, [], 0))

    async def set_conversation_metadata(self, tenant: str, conversation_id: str, metadata: bytes) -> bool:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        args = [metadata, int(time.time() * 1000), self._ttl]
        return bool(await self._run(self._set_metadata, [conv.meta], args))

    async def remove_item(self, tenant: str, conversation_id: str, item_id: str) -> int | None:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        args = [tenant, conversation_id, item_id, int(time.time() * 1000), self._ttl]
        version = int(await self._run(self._remove_item, [conv.meta, conv.tag_prefix], args))
        return version if version > 0 else None

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except _UNREACHABLE as exc:
            raise StoreDown(str(exc)) from exc

    async def close(self) -> None:
        await self._client.aclose()


def _turn_result(reply: list[Any], turn: Turn) -> TurnResult:
    status = reply[0].decode()
    if status in ("ok", "replay"):
        conv, version, appended, total, turns, response_id = reply[1:7]
        return TurnResult(
            response_id=None if response_id in (b"-", "-") else _text(response_id),
            conversation_id=_text(conv),
            version=int(version),
            appended=int(appended),
            session_bytes=int(total),
            turns=int(turns),
            replayed=status == "replay",
        )
    if status == "conflict":
        raise Conflict(int(reply[1]))
    if status == "idem_conflict":
        raise IdempotencyKeyReused(turn.idempotency_key)
    if status == "parent_missing":
        raise ParentNotFound(turn.parent_response_id)
    if status == "parent_other_conversation":
        raise ParentInOtherConversation(turn.parent_response_id)
    if status == "reservation_missing":
        raise RuntimeError(f"response {turn.response_id} was not reserved before it was stored")
    if status == "conv_missing":
        raise ConversationMissing(turn.conversation_id)
    raise RuntimeError(f"append_turn returned {status!r}")


def _history(reply: list[Any]) -> History | None:
    if len(reply) == 1:  # only the reservation: unknown, deleted, expired or another tenant's
        return None
    conv, response_id, version, total, turns, created, updated, status, body = reply[1:10]
    return History(
        conversation_id=conv.decode(),
        response_id=response_id.decode() or None,
        version=int(version),
        session_bytes=int(total or 0),
        turns=int(turns or 0),
        created_ms=int(created or 0),
        updated_ms=int(updated or 0),
        status=status.decode(),
        body=body,
        items=reply[10:],
    )


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
