"""Token counts (docs/api.md §7): a `tokenizers` tokenizer.json per model, else the engine's `/tokenize`,
else an estimate that says it is one. Counts of stored items are cached, so a turn counts only what is new."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .summarise import message_text, parts_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER, ENGINE, ESTIMATE = "tokenizer", "engine", "estimate"
# Role markers and separators a chat template wraps each message in: a few tokens, the same for all.
MESSAGE_OVERHEAD = 4
# Longer texts are counted on a worker thread: a tokenizer holds the event loop for the whole text.
OFF_LOOP_CHARS = 8192
CACHE_ENTRIES = 200_000
ENGINE_CONCURRENCY = 8

EngineCount = Callable[[str], Awaitable[int | None]]


class TokenizerLoadError(ValueError):
    """A tokenizer file named in the policy file cannot be read; the message names its path."""


def load_tokenizers(policy: Mapping[str, Any]) -> dict[str, Tokenizer]:
    """Every `tokenizers.<model>` file, loaded once at start-up."""
    from tokenizers import Tokenizer

    loaded = {}
    for model, path in (policy.get("tokenizers") or {}).items():
        try:
            loaded[model] = Tokenizer.from_file(str(Path(path)))
        except Exception as exc:  # missing file, not a tokenizer.json: start-up stops naming it
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise TokenizerLoadError(f"tokenizers.{model}: cannot load {path}: {reason}") from None
    return loaded


def estimate_text(text: str) -> int:
    """≈4 bytes a token: what is counted when nothing better is known (and said to be an estimate)."""
    return (len(text.encode()) + 3) // 4


def item_text(item: Mapping[str, Any]) -> str:
    """The text of an item the engine reads (roles and markup are MESSAGE_OVERHEAD)."""
    kind = item.get("type", "message")
    if kind == "message":
        return message_text(dict(item))
    if kind == "function_call":
        return f"{item.get('name', '')}({item.get('arguments', '')})"
    if kind == "function_call_output":
        output = item.get("output")
        return output if isinstance(output, str) else parts_text(output)
    if kind == "reasoning":
        return parts_text(item.get("summary"))
    return orjson.dumps(item).decode()


class CountCache:
    """Counts of item bytes by digest, bounded (least recently used goes first)."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._counts: OrderedDict[bytes, int] = OrderedDict()

    @staticmethod
    def key(source: str, model: str, raw: bytes) -> bytes:
        digest = hashlib.blake2b(raw, digest_size=16)
        digest.update(b"\x00" + source.encode() + b"\x00" + model.encode())
        return digest.digest()

    def get(self, key: bytes) -> int | None:
        count = self._counts.get(key)
        if count is not None:
            self._counts.move_to_end(key)
        return count

    def put(self, key: bytes, count: int) -> None:
        self._counts[key] = count
        if len(self._counts) > self.entries:
            self._counts.popitem(last=False)


class TokenCounter:
    """Counts for one model from one source. An engine whose `/tokenize` fails mid-way turns the counter
    into an estimate (and `source` says so); only real counts are cached."""

    def __init__(
        self,
        source: str,
        model: str,
        cache: CountCache,
        *,
        tokenizer: Tokenizer | None = None,
        engine: EngineCount | None = None,
    ) -> None:
        self.source = source
        self.model = model
        self.cache = cache
        self.tokenizer = tokenizer
        self.engine = engine

    async def text(self, text: str) -> int:
        """Tokens of a text (pack system prompts, instructions, summaries and tools recur: cached)."""
        if not text:
            return 0
        if self.source == ESTIMATE:
            return estimate_text(text)
        source = self.source
        key = CountCache.key(source, self.model, b"text\x00" + text.encode())
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        count = await self._count(text)
        if self.source == source:
            self.cache.put(key, count)
        return count

    async def _count(self, text: str) -> int:
        if not text:
            return 0
        if self.source == TOKENIZER:
            assert self.tokenizer is not None
            if len(text) > OFF_LOOP_CHARS:
                return await asyncio.to_thread(self._encode, text)
            return self._encode(text)
        if self.source == ENGINE:
            assert self.engine is not None
            count = await self.engine(text)
            if count is not None:
                return count
            self.source = ESTIMATE
        return estimate_text(text)

    def _encode(self, text: str) -> int:
        assert self.tokenizer is not None
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    async def items(self, raw: list[bytes]) -> list[int]:
        """One count per stored item (its text plus MESSAGE_OVERHEAD), new ones counted at once."""
        if self.source == ESTIMATE:
            return [(len(r) + 3) // 4 for r in raw]
        counts: list[int | None] = []
        missing: list[int] = []
        for n, r in enumerate(raw):
            cached = self.cache.get(CountCache.key(self.source, self.model, r))
            counts.append(cached)
            if cached is None:
                missing.append(n)
        if missing:
            limit = asyncio.Semaphore(ENGINE_CONCURRENCY)

            async def count(n: int) -> None:
                async with limit:
                    source = self.source
                    tokens = await self._count(item_text(orjson.loads(raw[n])))
                    counts[n] = tokens + MESSAGE_OVERHEAD
                    if source != ESTIMATE and self.source == source:
                        self.cache.put(CountCache.key(source, self.model, raw[n]), tokens + MESSAGE_OVERHEAD)

            await asyncio.gather(*(count(n) for n in missing))
        return [c if c is not None else 0 for c in counts]
