"""Preloading a Redis with chained conversations whose turns are byte-for-byte what the sidecar stores.

Turns go through the sidecar's own encoders (`with_sidecar_ids`, `stored_output`, `compact_record`), and each
EVALSHA is the one `RedisStore.append_turn` builds (captured from it, then pipelined on raw connections), so a
large population loads in minutes without a second copy of the key layout.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import hiredis

from sidecar.ids import conversation_tag, mint_in_conversation, mint_response_id
from sidecar.response_record import compact_record
from sidecar.store import RedisStore, Turn
from sidecar.stored_items import with_sidecar_ids
from sidecar.turns import stored_output
from sidecar.wire.resource import build_response_resource
from tests.fixtures.redis_servers import redis_call

from .engine import ANSWER
from .load import input_text

TENANT = "bench"
TTL_SECONDS = 30 * 24 * 3600
_PIPELINE_CONVERSATIONS = 8  # per batch on one connection: 8 x 50 turns in one write
_LOADER_CONNECTIONS = 4

# --------------------------------------------------------------------------------------------------
# turns as the sidecar stores them


class TurnFactory:
    """Stored bytes of a chained turn: ~200-byte user input, ~200-byte assistant answer, compact record.
    Built once through the sidecar's own encoders with placeholder ids, then ids are swapped in per turn."""

    def __init__(self, rng: random.Random, input_bytes: int = 200) -> None:
        placeholder_tag = "0" * 12
        self.msg_placeholder = mint_in_conversation("msg", placeholder_tag)
        self.out_placeholder = self.msg_placeholder.replace("msg_", "msg_f", 1)[: len(self.msg_placeholder)]
        self.resp_placeholder = mint_response_id(placeholder_tag, 0)
        self.inputs: list[bytes] = []
        for _ in range(32):
            request_item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": input_text(rng, input_bytes)}],
            }
            [(_, encoded)] = with_sidecar_ids([request_item], placeholder_tag)
            self.inputs.append(encoded.replace(orjson_id(encoded), self.msg_placeholder.encode()))
        answer = {
            "id": self.out_placeholder,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": ANSWER, "annotations": [], "logprobs": []}],
        }
        [(_, self.output)] = stored_output([answer])
        self.records = {first: self._record(first) for first in (True, False)}

    def _record(self, first: bool) -> bytes:
        now = int(time.time())
        resource = build_response_resource(
            response_id=self.resp_placeholder,
            created_at=now,
            status="completed",
            model="bench-model",
            output=[],
            request={"model": "bench-model", "input": "..."},
            completed_at=now,
            usage={"input_tokens": 64, "output_tokens": 50, "total_tokens": 114},
            previous_response_id=None if first else self.resp_placeholder,
        )
        return compact_record(resource)

    def turn(self, conv: str, tag: str, n: int, parent: str | None, *, mint: bool = False) -> Turn:
        """Turn n of a chain. `mint`: the store mints the response id (the write path measured alone;
        the proxy reserves ids while resolving), else record index n is assumed free (the preload)."""
        in_id, out_id = mint_in_conversation("msg", tag), mint_in_conversation("msg", tag)
        items = [
            (in_id, self.inputs[n % len(self.inputs)].replace(self.msg_placeholder.encode(), in_id.encode())),
            (out_id, self.output.replace(self.out_placeholder.encode(), out_id.encode())),
        ]
        record = self.records[parent is None]
        if parent is not None:
            record = record.replace(self.resp_placeholder.encode(), parent.encode())
        return Turn(
            TENANT,
            conv if parent is None else "",
            items,
            n_input=1,
            parent_response_id=parent,
            # Turn n of a conversation alone in its slot takes record index n: predictable, so the
            # preload can pipeline a whole chain without waiting for each turn's reply.
            response_id=None if mint else mint_response_id(tag, n),
            mint_response=mint,
            response_body=record,
        )


def orjson_id(encoded: bytes) -> bytes:
    start = encoded.index(b'"id":"') + len(b'"id":"')
    return encoded[start : encoded.index(b'"', start)]


def payload_bytes(turn: Turn) -> tuple[int, int]:
    """(normalised item bytes, response record bytes) of one turn."""
    return sum(len(b) for _, b in turn.items), len(turn.response_body)


# --------------------------------------------------------------------------------------------------
# preload: RedisStore builds each EVALSHA, raw pipelined connections send it


class _CapturedScript:
    def __init__(self, owner: _CaptureClient, text: str) -> None:
        self.owner = owner
        self.sha = hashlib.sha1(text.encode()).hexdigest()
        self.text = text

    async def __call__(self, keys: list[str], args: list[Any]) -> list[Any]:
        self.owner.captured = (self.sha, keys, args)
        return [b"ok", b"", 0, 0, 0, 0, b"-"]


class _CaptureClient:
    """Stands in for the Redis client: records the script call `RedisStore` makes instead of sending it."""

    def __init__(self) -> None:
        self.captured: tuple[str, list[str], list[Any]] | None = None
        self.scripts: list[_CapturedScript] = []

    def register_script(self, text: str) -> _CapturedScript:
        script = _CapturedScript(self, text)
        self.scripts.append(script)
        return script


def _resp(parts: list[Any]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


@dataclass
class Population:
    conversations: int = 0
    turns: int = 0
    item_bytes: int = 0
    record_bytes: int = 0
    seconds: float = 0.0
    # per loaded conversation: (conversation id, response ids of turns 1..N)
    chains: list[tuple[str, list[str]]] = field(default_factory=list)


async def preload(
    port: int, conversations: int, turns: int, seconds: float, factory: TurnFactory
) -> Population:
    capture = _CaptureClient()
    encoder = RedisStore(capture, TTL_SECONDS)
    for script in capture.scripts:
        redis_call(port, "SCRIPT", "LOAD", script.text)
    population = Population()
    next_conv = iter(range(conversations))
    used_tags: set[str] = set()
    started = time.monotonic()
    deadline = started + seconds

    async def loader() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        parser = hiredis.Reader()
        try:
            while time.monotonic() < deadline:
                batch = [n for _, n in zip(range(_PIPELINE_CONVERSATIONS), next_conv, strict=False)]
                if not batch:
                    return
                chains: list[tuple[str, str, list[str]]] = []
                for n in batch:
                    conv = f"conv_{n:024x}"
                    tag = conversation_tag(TENANT, conv)
                    if tag in used_tags:  # two conversations in one slot share its record list: skip
                        continue
                    used_tags.add(tag)
                    chains.append((conv, tag, []))
                commands = []
                for t in range(turns):  # turn t of every conversation, so each parent precedes its child
                    for conv, tag, ids in chains:
                        turn = factory.turn(conv, tag, t, ids[-1] if ids else None)
                        await encoder.append_turn(turn)
                        assert capture.captured is not None
                        sha, keys, args = capture.captured
                        commands.append(_resp(["EVALSHA", sha, len(keys), *keys, *args]))
                        items, record = payload_bytes(turn)
                        population.item_bytes += items
                        population.record_bytes += record
                        assert turn.response_id is not None
                        ids.append(turn.response_id)
                writer.write(b"".join(commands))
                await writer.drain()
                replies = 0
                while replies < len(commands):
                    reply = parser.gets()
                    if reply is False:
                        parser.feed(await reader.read(1 << 20))
                        continue
                    if not isinstance(reply, list) or reply[0] != b"ok":
                        raise RuntimeError(f"preload append failed: {reply!r}")
                    replies += 1
                population.conversations += len(chains)
                population.turns += len(commands)
                population.chains += [(conv, ids) for conv, _, ids in chains]
        finally:
            writer.close()

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            print(
                f"  preloaded {population.conversations} conversations ({population.turns} turns) in "
                f"{time.monotonic() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(loader() for _ in range(_LOADER_CONNECTIONS)))
    finally:
        reporter.cancel()
    population.seconds = time.monotonic() - started
    return population
