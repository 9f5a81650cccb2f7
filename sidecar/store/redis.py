"""Redis backend: every write is one Lua script, every resolve one EVALSHA to one shard."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..ids import conversation_tag, mint_response_id, parse_response_id, response_random
from ..keys import ConversationKeys, rate_key, records_key, usage_key
from ..redact import mask_userinfo
from .base import (
    CLAIM_SECONDS,
    IDEMPOTENCY_TTL_SECONDS,
    Begun,
    Claim,
    Conflict,
    ConversationMissing,
    History,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    ParentInOtherConversation,
    ParentNotFound,
    Range,
    RateDecision,
    ReservationLapsed,
    StoreDown,
    StoredSummary,
    Turn,
    TurnResult,
    Usage,
)
from .lua import load_script
from .redis_runs import RedisRuns, Script, as_bytes, text
from .redis_shared import RedisShared
from .redis_wait import Replication, cluster_call_and_wait
from .resp_client import PipelinedRedis, RedisReplyError

MAX_CONNECTIONS = 1024
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
# What a Redis Cluster answers while it reshards or fails over: the store is briefly unusable, not broken.
# A script declares only keys that exist whenever its data does, so a slot being migrated answers TRYAGAIN
# only once keys have started to move; that, and the other passing states, are retried for a moment.
_PASSING = (
    TryAgainError,
    ClusterDownError,
    MasterDownError,
    BusyLoadingError,
    ClusterError,
    RedisClusterException,
    AuthenticationError,
    # redis-py's cluster client on a connection that a failover closed under it
    RuntimeError,
    AttributeError,
)
_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8)
log = logging.getLogger("convostore.store")


class RedisStore(RedisRuns, RedisShared):
    """`client` is the lean PipelinedRedis on a standalone server, redis-py's RedisCluster on a cluster:
    both offer register_script, get, ping and aclose."""

    def __init__(self, client: Any, ttl_seconds: float, wait: Replication | None = None) -> None:
        self._client = client
        self._wait = wait
        self._ttl = max(1, int(ttl_seconds * 1000))  # ms: scripts use PEXPIRE, so tests can use tiny TTLs
        self._idempotency_ttl = min(IDEMPOTENCY_TTL_SECONDS * 1000, self._ttl)
        self._claim_ttl = CLAIM_SECONDS * 1000
        self._append: Script = client.register_script(load_script("append_turn-1"))
        self._resolve: Script = client.register_script(load_script("resolve_history-1"))
        self._delete_response: Script = client.register_script(load_script("delete_response-1"))
        self._delete_conversation: Script = client.register_script(load_script("delete_conversation-1"))
        self._set_metadata: Script = client.register_script(load_script("set_metadata-1"))
        self._add_summary: Script = client.register_script(load_script("add_summary-1"))
        self._read_summaries: Script = client.register_script(load_script("read_summaries-1"))
        self._remove_item: Script = client.register_script(load_script("remove_item-1"))
        self._abandon_turn: Script = client.register_script(load_script("abandon_turn-1"))
        self._take_request: Script = client.register_script(load_script("take_request-1"))
        self._account_usage: Script = client.register_script(load_script("account_usage-1"))
        self._shared_secret: Script = client.register_script(load_script("shared_secret-1"))
        self._alias: Script = client.register_script(load_script("alias_response-1"))
        self._run_scripts: dict[str, Script] = {
            name: client.register_script(load_script(f"{name}-1"))
            for name in (
                "start_run", "append_run_events", "finish_run", "read_run", "cancel_run", "take_over_run",
                "track_run", "due_runs", "renew_turn", "hold_run_slot", "release_run_slot",
            )
        }  # fmt: skip

    @classmethod
    async def connect(cls, url: str, ttl_seconds: float, *, wait: Replication | None = None) -> RedisStore:
        """Connect, detecting a Redis Cluster by itself."""
        lean = PipelinedRedis(url)
        try:
            info = await lean.info("cluster")
        except _UNREACHABLE as exc:
            await lean.aclose()
            raise StoreDown(f"cannot reach Redis at {mask_userinfo(url)}: {exc}") from exc
        if not info.get("cluster_enabled"):
            return cls(lean, ttl_seconds, wait)
        await lean.aclose()
        # redis-py's cluster client owns slot routing; it fails rather than waits when its pool is
        # exhausted, so size it for bursts.
        cluster = RedisCluster.from_url(url, max_connections=MAX_CONNECTIONS)
        await cluster.initialize()
        return cls(cluster, ttl_seconds, wait)

    @property
    def client(self) -> Any:
        return self._client

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        return await self._call(lambda: script(keys=keys, args=args))

    async def _call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        """Run a command, retried through a cluster's passing states; an unusable store is StoreDown."""
        for delay in (*_RETRY_DELAYS_S, None):
            try:
                return await command()
            except _UNREACHABLE as exc:
                raise StoreDown(str(exc)) from exc
            except (*_PASSING, ResponseError, RedisReplyError) as exc:
                # A script reaching a key that a reshard already moved is refused before it writes; a
                # restarted server answers LOADING while it reads its data back.
                if isinstance(exc, (ResponseError, RedisReplyError)) and not _is_passing_reply(exc):
                    raise
                if delay is None:
                    raise StoreDown(f"Redis Cluster is resharding or failing over: {exc}") from exc
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

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
            self._idempotency_ttl,
            response,
            turn.response_body,
            turn.response_status,
            "1" if turn.create else "0",
            turn.conversation_metadata,
            turn.n_input,
            turn.parent_response_id or "",
            os.urandom(4).hex(),  # the conversation's incarnation, if this turn creates it
            turn.planned_incarnation,
        ]
        args.extend(item for _, item in turn.items)
        if self._wait is None:
            reply = await self._run(self._append, [records_key(tag)], args)
        else:
            reply = await self._call(lambda: self._append_and_wait([records_key(tag)], args))
        return _turn_result(reply, turn)

    async def _append_and_wait(self, keys: list[str], args: list[Any]) -> Any:
        assert self._wait is not None
        replicas, timeout_ms = self._wait.replicas, self._wait.timeout_ms
        if isinstance(self._client, RedisCluster):
            reply, acked = await cluster_call_and_wait(self._client, self._append, keys, args, self._wait)
        else:
            reply, acked = await self._append.call_and_wait(keys, args, replicas, timeout_ms)  # type: ignore[attr-defined]
        if acked < replicas:
            log.warning("a stored turn reached %d of %d replicas within %d ms", acked, replicas, timeout_ms)
        return reply

    async def resolve_response(self, tenant: str, response_id: str, range_: Range = "full") -> History | None:
        parsed = parse_response_id(response_id)
        if parsed is None:
            return None
        tag = parsed[0]
        args = ["resp", tenant, response_id, range_, self._ttl, "0", "", "", self._claim_ttl, "", "0"]
        return _history(await self._run(self._resolve, [records_key(tag)], args), range_)

    async def resolve_conversation(self, tenant: str, conversation_id: str) -> History | None:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        args = ["conv", tenant, conversation_id, "full", self._ttl, "0", "", "", self._claim_ttl, "", "0"]
        return _history(await self._run(self._resolve, [conv.meta], args))

    async def begin_turn(
        self,
        tenant: str,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        claim: Claim | None = None,
    ) -> Begun:
        if previous_response_id is not None:
            parsed = parse_response_id(previous_response_id)
            if parsed is None:
                return Begun(None, "")
            tag = parsed[0]
            keys = [records_key(tag)]
            args: list[Any] = ["resp", tenant, previous_response_id]
        else:
            assert conversation_id is not None
            tag = conversation_tag(tenant, conversation_id)
            conv = ConversationKeys(tag, tenant, conversation_id)
            keys = [conv.meta]
            args = ["conv", tenant, conversation_id]
        random_part = response_random()
        args += ["full", self._ttl, "1", claim.key if claim else "", claim.request_hash if claim else ""]
        args += [self._claim_ttl, random_part, "1" if claim and claim.fresh else "0"]
        reply = await self._run(self._resolve, keys, args)
        if isinstance(reply[0], bytes):  # the idempotency key was used before
            result = _turn_result(reply, Turn(tenant, conversation_id or "", [], 0))
            return Begun(None, result.response_id or "", replay=result)
        index = int(reply[0])
        return Begun(_history(reply), mint_response_id(tag, index, random_part) if index >= 0 else "")

    async def abandon_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None = None
    ) -> None:
        parsed = parse_response_id(response_id)
        if parsed is None:
            return
        args = [
            response_id,
            claim.key if claim else "",
            claim.request_hash if claim else "",
            tenant,
            conversation_id,
        ]
        await self._run(self._abandon_turn, [records_key(parsed[0])], args)

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        parsed = parse_response_id(response_id)
        if parsed is None:
            return False
        return bool(await self._run(self._delete_response, [records_key(parsed[0])], [tenant, response_id]))

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        return bool(await self._run(self._delete_conversation, [conv.meta], [tenant, conversation_id]))

    async def set_conversation_metadata(self, tenant: str, conversation_id: str, metadata: bytes) -> bool:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        args = [metadata, int(time.time() * 1000), self._ttl, tenant, conversation_id]
        return bool(await self._run(self._set_metadata, [conv.meta], args))

    async def remove_item(self, tenant: str, conversation_id: str, item_id: str) -> int | None:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        args = [tenant, conversation_id, item_id, int(time.time() * 1000), self._ttl]
        version = int(await self._run(self._remove_item, [conv.meta], args))
        return version if version > 0 else None

    async def conversation_exists(self, tenant: str, conversation_id: str) -> bool:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        return bool(await self._call(lambda: self._client.exists(conv.meta)))

    async def add_summary(
        self, tenant: str, conversation_id: str, block: str, text: bytes
    ) -> StoredSummary | None:
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        reply = await self._run(self._add_summary, [conv.meta], [tenant, conversation_id, block, text])
        return StoredSummary(as_bytes(reply[0]), bool(int(reply[1]))) if reply is not None else None

    async def read_summaries(self, tenant: str, conversation_id: str, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        conv = ConversationKeys(conversation_tag(tenant, conversation_id), tenant, conversation_id)
        found = await self._run(self._read_summaries, [conv.meta], [tenant, conversation_id, *keys])
        return [as_bytes(summary) if summary is not None else None for summary in found]

    async def take_request(self, tenant: str, per_minute: int) -> RateDecision:
        allowed, remaining, reset_ms = await self._run(self._take_request, [rate_key(tenant)], [per_minute])
        return RateDecision(bool(allowed), int(remaining), int(reset_ms))

    async def account_usage(self, tenant: str, conversation_id: str, op: str, stored_bytes: int = 0) -> Usage:
        args = [conversation_id, op, stored_bytes]
        total, conversations = await self._run(self._account_usage, [usage_key(tenant)], args)
        return Usage(int(total), int(conversations))

    async def usage(self, tenant: str) -> tuple[Usage, list[str]]:
        raw = await self._call(lambda: self._client.hgetall(usage_key(tenant)))
        fields = {text(k): text(v) for k, v in (raw.items() if isinstance(raw, dict) else _pairs(raw))}
        counted = [name[2:] for name in fields if name.startswith("c:")]
        return Usage(int(fields.get("bytes", 0)), int(fields.get("convs", 0))), counted

    async def ping(self) -> None:
        await self._call(self._client.ping)

    async def close(self) -> None:
        await self._client.aclose()


def _is_passing_reply(exc: Exception) -> bool:
    message = str(exc)
    return any(
        marker in message for marker in ("TRYAGAIN", "non local key", "CLUSTERDOWN", "MASTERDOWN", "LOADING")
    )


def _turn_result(reply: list[Any], turn: Turn) -> TurnResult:
    status = reply[0].decode()
    if status in ("ok", "replay"):
        conv, version, appended, total, turns, response_id = reply[1:7]
        return TurnResult(
            response_id=None if response_id in (b"-", "-") else text(response_id),
            conversation_id=text(conv),
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
    if status == "in_flight":
        raise IdempotencyInFlight(turn.idempotency_key)
    if status == "parent_missing":
        raise ParentNotFound(turn.parent_response_id)
    if status == "parent_other_conversation":
        raise ParentInOtherConversation(turn.parent_response_id)
    if status == "reservation_missing":
        raise ReservationLapsed(f"response {turn.response_id} was not reserved before it was stored")
    if status == "conv_missing":
        raise ConversationMissing(turn.conversation_id)
    raise RuntimeError(f"append_turn returned {status!r}")


def _history(reply: list[Any], range_: Range = "full") -> History | None:
    if len(reply) == 1:  # only the reservation: unknown, deleted, expired or another tenant's
        return None
    conv, response_id, version, total, turns, created, updated, status, body, summary_bytes, inc = reply[1:12]
    items, summaries = reply[12:], None
    if range_ == "full":  # the stored summaries come first, when there are any: an array among strings
        summaries = {}
        if items and isinstance(items[0], list):
            summaries = {text(key): as_bytes(value) for key, value in _pairs(items[0])}
            items = items[1:]
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
        items=items,
        summary_bytes=int(summary_bytes or 0),
        summaries=summaries,
        incarnation=text(inc),
    )


def _pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2], strict=True))
