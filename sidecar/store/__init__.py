"""Conversation storage: one protocol, a Redis backend and an in-process memory backend."""

from __future__ import annotations

from .base import History, Store, Turn, TurnResult
from .memory import MemoryStore
from .redis import RedisStore
from .redis_wait import Replication


async def open_store(url: str, ttl_seconds: int, *, wait: Replication | None = None) -> Store:
    """`memory://` gives the embedded store; anything else is a Redis URL."""
    if url.startswith("memory://"):
        return MemoryStore(ttl_seconds)
    return await RedisStore.connect(url, ttl_seconds, wait=wait)


__all__ = ["History", "MemoryStore", "RedisStore", "Store", "Turn", "TurnResult", "open_store"]
