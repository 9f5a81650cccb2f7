"""The one function from (pack, policy, stored history, new input) to what the engine receives: used by
the proxy in both upstream modes, stateful chat, the session API's resolve and trim alike."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ContextLengthExceeded
from ..fingerprint import EMPTY_TOOLS, prefix_fingerprint
from ..wire.chat_messages import Message, stored_items_to_messages
from ..wire.items import Item
from ..wire.tools import canonical_tools, responses_tool, tools_bytes
from .packs import Pack
from .policy import WindowPolicy
from .summarise import template_summary
from .summarisers import FoldedBlock, StoredSummaries
from .tokens import MESSAGE_OVERHEAD, TokenCounter
from .trim import Span, next_block, regular_blocks, split_turns

TRUNCATIONS = ("disabled", "auto")
SUMMARY_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the engine gets: one system text (the pack's, the call's instructions, then the summary blocks,
    oldest first), then `items` — the pack's exemplars, pinned instructions, the verbatim turns and the new
    input (`items[first_input:]`) — and the tools (the pack's first)."""

    system: str | None
    items: list[bytes]
    first_input: int
    tools: list[Any] | None
    fingerprint: str
    input_tokens: int
    token_source: str
    summaries: tuple[str, ...]
    summarised_turns: int
    dropped_summaries: int
    summary_seconds: float
    reshaped: bool  # a pack or summaries apply: `system` replaces the client's instructions
    # Stored summaries (`upstream`/`http`): blocks the policy folds whose summary is not stored yet.
    pending: tuple[FoldedBlock, ...] = ()

    def chat_messages(self) -> list[Message]:
        return stored_items_to_messages(self.items, self.system, first_input=self.first_input)

    def engine_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        """A request body with the prompt's tools (canonical) and, when a pack or a summary shapes the
        prompt, its system text as `instructions`; the client's body itself when neither applies."""
        if not self.reshaped and self.tools is None:
            return body
        fields = {**body, "instructions": self.system} if self.reshaped else {**body}
        if self.tools is not None:
            fields["tools"] = self.tools
        return fields


async def build_prompt(
    *,
    pack: Pack,
    policy: WindowPolicy,
    counter: TokenCounter,
    history: Sequence[bytes],
    new_input: Sequence[bytes] = (),
    instructions: str | None = None,
    request_tools: list[Any] | None = None,
    chat_tools: bool = False,
    truncation: str = "disabled",
    compacted: Sequence[str] = (),
    stored: StoredSummaries | None = None,
) -> Prompt:
    """The engine's prompt for a turn. Folding is a pure function of the history and the policy; the
    budget (`max_input_tokens`) folds earlier and drops the oldest summary text only when `truncation` is
    "auto", and an input that cannot fit even alone is always `context_length_exceeded`."""
    all_raw = [*history, *new_input]
    tools, hashed_tools = prompt_tools(pack, request_tools, chat_tools=chat_tools)
    # Summaries carried by compaction items (compaction.py) follow the instructions, as summary text.
    head = [*(part for part in (pack.system, instructions) if part), *compacted]
    # Without exemplars (no pack) the history's own list is counted: no copies of it per turn.
    few_shot = len(pack.few_shot)
    counts = await counter.items([*pack.few_shot, *all_raw] if few_shot else all_raw)
    few_shot_tokens = sum(counts[:few_shot]) if few_shot else 0
    item_tokens = counts[few_shot:] if few_shot else counts
    fixed = few_shot_tokens + await _text_tokens(counter, head)
    fixed += await counter.text(hashed_tools.decode()) if tools else 0

    blocks: list[Span] = []
    spans: list[Span] = []
    pinned = 0
    items: list[Item] = []
    if policy.trims:
        items = [orjson.loads(r) for r in all_raw]
        pinned, spans = split_turns(items)
        first_current = _first_current_turn(spans, len(history))
        blocks = regular_blocks(len(spans), first_current, policy)
    started = time.perf_counter()
    pending: list[FoldedBlock] = []
    deferred: list[Span] = []
    if stored is not None and blocks:
        # Only blocks with a stored summary fold; the rest wait (verbatim) for the summariser's text.
        ready, summaries, pending = await stored.regular(items, all_raw, spans, blocks)
        blocks, deferred = ready, blocks[len(ready) :]
    else:
        summaries = [_summary(items, spans, block) for block in blocks]
    kept = _kept_from(pinned, spans, blocks)
    total = fixed + await _text_tokens(counter, summaries) + _sum_kept(item_tokens, pinned, kept)
    budget = policy.max_input_tokens
    while stored is not None and deferred and budget is not None and total > budget:
        # Waiting must never refuse a turn the template would have served: fold now, as stored.
        blocks.append(deferred.pop(0))
        summaries.append(await stored.forced(items, all_raw, spans, blocks[-1]))
        kept = _kept_from(pinned, spans, blocks)
        total = fixed + await _text_tokens(counter, summaries)
        total += sum(item_tokens[:pinned] + item_tokens[kept:])
    dropped = 0
    if budget is not None and total > budget:
        alone = fixed + sum(item_tokens[:pinned]) + sum(item_tokens[_input_turn_start(spans, len(history)) :])
        if alone > budget or truncation != "auto":
            raise ContextLengthExceeded(total if alone <= budget else alone, budget, alone=alone > budget)
        first_current = _first_current_turn(spans, len(history))
        while total > budget:
            block = next_block(blocks, first_current, policy.summary_every_turns)
            if block is None:
                break
            blocks.append(block)
            summaries.append(
                _summary(items, spans, block)
                if stored is None
                else await stored.forced(items, all_raw, spans, block)
            )
            kept = _kept_from(pinned, spans, blocks)
            total = fixed + await _text_tokens(counter, summaries[dropped:])
            total += sum(item_tokens[:pinned] + item_tokens[kept:])
        while total > budget and dropped < len(summaries):
            dropped += 1
            total = fixed + await _text_tokens(counter, summaries[dropped:])
            total += sum(item_tokens[:pinned] + item_tokens[kept:])
        if total > budget:
            raise ContextLengthExceeded(total, budget, alone=True)
    summary_seconds = time.perf_counter() - started if blocks else 0.0
    sent_summaries = summaries[dropped:]
    system_parts = [*head, *sent_summaries]
    sent = (
        all_raw if not (few_shot or pinned or kept) else [*pack.few_shot, *all_raw[:pinned], *all_raw[kept:]]
    )
    return Prompt(
        system=SUMMARY_SEPARATOR.join(system_parts) if system_parts else None,
        items=sent,
        first_input=len(sent) - len(new_input),
        tools=tools or None,
        fingerprint=prefix_fingerprint(
            pack=pack.prefix,
            tools=hashed_tools,
            summary=SUMMARY_SEPARATOR.join([*compacted, *sent_summaries]).encode(),
        ),
        input_tokens=total,
        token_source=counter.source,
        summaries=tuple(sent_summaries),
        summarised_turns=blocks[-1][1] if blocks else 0,
        dropped_summaries=dropped,
        summary_seconds=summary_seconds,
        reshaped=bool(pack.system or pack.few_shot or pack.tools or sent_summaries or compacted),
        pending=tuple(block for block in pending if block.last_turn > (blocks[-1][1] if blocks else 0)),
    )


def prompt_tools(pack: Pack, request_tools: list[Any] | None, *, chat_tools: bool) -> tuple[list[Any], bytes]:
    """The tools a prompt carries, canonical, the pack's first (in the route's form: chat's for stateful
    chat), and the bytes the fingerprint hashes for them: always their Responses form, so that the same
    tools on /v1/responses and on stateful chat are the same prefix, as they are to a chat engine."""
    request = canonical_tools(request_tools)  # no work when none are sent
    tools = [*(pack.chat_tools if chat_tools else pack.tools), *(request or [])]
    if not tools:
        return tools, EMPTY_TOOLS
    hashed = [*pack.tools, *map(responses_tool, request or [])] if chat_tools else tools
    return tools, tools_bytes(hashed)


def pack_fingerprint(pack: Pack, request_tools: list[Any] | None, *, chat_tools: bool) -> str:
    """The fingerprint of a prompt with no summary block, without building the prompt: what a replay of a
    turn stored before records kept their fingerprint reports."""
    return prefix_fingerprint(
        pack=pack.prefix, tools=prompt_tools(pack, request_tools, chat_tools=chat_tools)[1]
    )


def _sum_kept(item_tokens: list[int], pinned: int, kept: int) -> int:
    """Tokens of the items sent verbatim: the pinned ones and those from `kept` on."""
    return (sum(item_tokens[:pinned]) if pinned else 0) + (
        sum(item_tokens[kept:]) if kept else sum(item_tokens)
    )


async def _text_tokens(counter: TokenCounter, texts: Sequence[str]) -> int:
    if not texts:
        return 0
    total = 0
    for text in texts:
        total += await counter.text(text)
    return total + (MESSAGE_OVERHEAD if texts else 0)


def _summary(items: list[Item], spans: list[Span], block: Span) -> str:
    first, last = block
    return template_summary(first + 1, [items[slice(*spans[t])] for t in range(first, last)])


def _kept_from(pinned: int, spans: list[Span], blocks: list[Span]) -> int:
    """The first item sent verbatim after the pinned ones: the start of the first turn not folded."""
    if not blocks:
        return pinned
    folded = blocks[-1][1]
    return spans[folded][0] if folded < len(spans) else (spans[-1][1] if spans else pinned)


def _first_current_turn(spans: list[Span], first_input: int) -> int:
    """The first turn holding an item of the new input; with none (resolve, trim), the last turn, which a
    prompt for the history as it stands always keeps."""
    for n, (_, end) in enumerate(spans):
        if end > first_input:
            return n
    return max(0, len(spans) - 1)


def _input_turn_start(spans: list[Span], first_input: int) -> int:
    """Where the smallest prompt that still holds the new input starts (its turn's first item)."""
    turn = _first_current_turn(spans, first_input)
    return spans[turn][0] if turn < len(spans) else first_input
