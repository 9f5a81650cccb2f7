"""Stored summaries as build_prompt folds them (sidecar/context/summarisers.py): a block folds only once its
summary is stored, the budget folds it at once with a stored template summary, and block keys name exactly
the summariser and the turns."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from sidecar.context.packs import NO_PACK
from sidecar.context.policy import WindowPolicy
from sidecar.context.prompt import Prompt, build_prompt
from sidecar.context.summarise import transcript
from sidecar.context.summarisers import StoredSummaries, block_key, folded_block, summariser_identity
from sidecar.context.tokens import ESTIMATE, CountCache, TokenCounter
from sidecar.context.trim import split_turns
from sidecar.store import MemoryStore, Turn
from tests.unit.context_helpers import assistant, user

TENANT, CONV = "t", "conv_summaries"
UPSTREAM = WindowPolicy(name="default", keep_last_turns=2, summary_every_turns=2, summariser="upstream")


def turns(n: int) -> list[bytes]:
    return [
        raw
        for k in range(1, n + 1)
        for raw in (user(f"question {k} " + "word " * 30), assistant(f"answer {k}"))
    ]


async def stored_store() -> MemoryStore:
    store = MemoryStore(3600)
    await store.append_turn(Turn(TENANT, CONV, [("msg_1", user("hi"))], n_input=1, mint_response=True))
    return store


async def build(
    store: MemoryStore, history: list[bytes], new: list[bytes], policy: WindowPolicy = UPSTREAM, **kw: Any
) -> Prompt:
    writable = kw.pop("writable", True)
    return await build_prompt(
        pack=NO_PACK,
        policy=policy,
        counter=TokenCounter(ESTIMATE, "", CountCache()),
        history=history,
        new_input=new,
        stored=StoredSummaries(store, TENANT, CONV, policy, writable=writable),
        **kw,
    )


def test_a_block_folds_only_once_its_summary_is_stored() -> None:
    async def run() -> None:
        store = await stored_store()
        history, new = turns(3), [user("question 4")]
        waiting = await build(store, history, new)
        # Turn 4 makes turns 1-2 due: they stay verbatim, and the block is pending for the writer.
        assert waiting.summaries == () and len(waiting.items) == 7
        [block] = waiting.pending
        assert (block.first_turn, block.last_turn) == (1, 2)
        assert block.template.startswith("Summary of turns 1-2:\n- user: question 1")
        await store.add_summary(TENANT, CONV, block.key, b"Summary of turns 1-2:\nThey asked twice.")
        folded = await build(store, history, new)
        assert folded.summaries == ("Summary of turns 1-2:\nThey asked twice.",) and folded.pending == ()
        assert [orjson.loads(i)["content"][0]["text"] for i in folded.items][-1] == "question 4"
        assert len(folded.items) == 3
        assert folded.fingerprint != waiting.fingerprint
        # The same history folds to the same bytes again (a replay, another replica).
        again = await build(store, history, new)
        assert (again.system, again.items, again.fingerprint) == (
            folded.system,
            folded.items,
            folded.fingerprint,
        )

    asyncio.run(run())


def test_blocks_fold_in_order_only() -> None:
    async def run() -> None:
        store = await stored_store()
        history, new = turns(5), [user("question 6")]
        first = await build(store, history, new)
        assert [(b.first_turn, b.last_turn) for b in first.pending] == [(1, 2), (3, 4)]
        await store.add_summary(TENANT, CONV, first.pending[1].key, b"Summary of turns 3-4:\nlater")
        # Block 3-4 is stored, 1-2 not: nothing folds (a summary block never comes before an earlier one).
        waiting = await build(store, history, new)
        assert waiting.summaries == () and [b.first_turn for b in waiting.pending] == [1]
        await store.add_summary(TENANT, CONV, first.pending[0].key, b"Summary of turns 1-2:\nfirst")
        both = await build(store, history, new)
        assert both.summaries == ("Summary of turns 1-2:\nfirst", "Summary of turns 3-4:\nlater")

    asyncio.run(run())


@pytest.mark.parametrize("writable", [True, False])
def test_the_budget_folds_at_once_with_the_template_summary(writable: bool) -> None:
    async def run() -> None:
        store = await stored_store()
        history, new = turns(3), [user("question 4")]
        waiting = await build(store, history, new)
        budget = waiting.input_tokens - 1  # the deferred prompt does not fit; the folded one does
        tight = WindowPolicy(**{**_fields(UPSTREAM), "max_input_tokens": budget})
        forced = await build(store, history, new, policy=tight, writable=writable)  # truncation "disabled"
        assert forced.input_tokens <= budget
        assert forced.summaries == (waiting.pending[0].template,) and forced.pending == ()
        [kept] = await store.read_summaries(TENANT, CONV, [waiting.pending[0].key])
        # A turn's own prompt stores it, so every later turn sends it; a read (resolve) stores nothing.
        assert kept == (waiting.pending[0].template.encode() if writable else None)

    asyncio.run(run())


def _fields(policy: WindowPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in WindowPolicy.__dataclass_fields__}


def test_block_keys_name_the_summariser_and_the_turns() -> None:
    raw = turns(2)
    items = [orjson.loads(r) for r in raw]
    _, spans = split_turns(items)
    upstream = summariser_identity(UPSTREAM)
    http = summariser_identity(WindowPolicy(summariser="http", summariser_url="http://a/s"))
    other_http = summariser_identity(WindowPolicy(summariser="http", summariser_url="http://b/s"))
    block = folded_block(upstream, items, raw, spans, (0, 2))
    assert (
        block.key == block_key(upstream, raw) == folded_block(upstream, items, list(raw), spans, (0, 2)).key
    )
    assert len({block.key, block_key(http, raw), block_key(other_http, raw)}) == 3
    assert block_key(upstream, [*raw[:-1], assistant("answer 2!")]) != block.key
    assert block_key(upstream, [raw[0] + raw[1], *raw[2:]]) != block.key  # item boundaries count
    assert block.heading == "Summary of turns 1-2:"
    assert folded_block(upstream, items, raw, spans, (1, 2)).heading == "Summary of turn 2:"


def test_the_transcript_keeps_whole_texts() -> None:
    long = "word " * 100
    lines = transcript([orjson.loads(user(long)), orjson.loads(assistant("ok"))]).split("\n")
    assert lines == [f"user: {long}", "assistant: ok"]


class CountingReads(MemoryStore):
    """A memory store that counts its read_summaries calls: the round trips a prompt costs."""

    reads = 0

    async def read_summaries(self, tenant: str, conversation_id: str, keys: list[str]) -> list[bytes | None]:
        self.reads += 1
        return await super().read_summaries(tenant, conversation_id, keys)


def test_a_turns_two_prompts_read_the_stored_summaries_once() -> None:
    async def run() -> None:
        store = CountingReads(3600)
        await store.append_turn(Turn(TENANT, CONV, [("msg_1", user("hi"))], n_input=1, mint_response=True))
        seen: dict[str, bytes | None] = {}
        history = turns(4)  # turn 5 adds no block: both prompts fold turns 1-2
        for new in ([], [user("question 5")]):  # the prompt continued, then the turn's own
            await build_prompt(
                pack=NO_PACK,
                policy=UPSTREAM,
                counter=TokenCounter(ESTIMATE, "", CountCache()),
                history=history,
                new_input=new,
                stored=StoredSummaries(store, TENANT, CONV, UPSTREAM, writable=bool(new), seen=seen),
            )
        assert store.reads == 1

    asyncio.run(run())


def test_summaries_the_resolve_brought_fold_without_reading_the_store() -> None:
    async def run() -> None:
        store = CountingReads(3600)
        await store.append_turn(Turn(TENANT, CONV, [("msg_1", user("hi"))], n_input=1, mint_response=True))
        history, new = turns(4), [user("question 5")]
        first = await build(store, history, new)  # nothing stored yet: the block 1-2 waits for its summary
        await store.add_summary(TENANT, CONV, first.pending[0].key, b"Summary of turns 1-2:\nstored")
        resolved = await store.resolve_conversation(TENANT, CONV)
        assert resolved is not None and resolved.summaries is not None
        reads = store.reads

        async def prompt_with(resolved_summaries: dict[str, bytes]) -> Prompt:
            return await build_prompt(
                pack=NO_PACK,
                policy=UPSTREAM,
                counter=TokenCounter(ESTIMATE, "", CountCache()),
                history=history,
                new_input=new,
                stored=StoredSummaries(
                    store, TENANT, CONV, UPSTREAM, writable=True, resolved=resolved_summaries
                ),
            )

        prompt = await prompt_with(resolved.summaries)
        assert store.reads == reads
        assert list(prompt.summaries) == ["Summary of turns 1-2:\nstored"] and not prompt.pending
        # A block missing from what the resolve brought is not stored: it waits, nothing is read for it.
        waiting = await prompt_with({})
        assert store.reads == reads and not waiting.summaries and len(waiting.pending) == 1

    asyncio.run(run())
