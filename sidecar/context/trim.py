"""Where the window folds (docs/api.md §7): pure functions of the history, so every turn and every replica
agrees on the same summary blocks, and the prompt's bytes change only at its end between folds."""

from __future__ import annotations

from collections.abc import Sequence

from ..wire.items import Item
from .policy import WindowPolicy

Span = tuple[int, int]  # [start, end) over turns, or over items


def split_turns(items: Sequence[Item]) -> tuple[int, list[Span]]:
    """How many leading system/developer messages are pinned (never folded: they are the conversation's
    own instructions), and the item spans of the turns after them. A user message starts a turn; anything
    before the first one belongs to the first turn."""
    pinned = 0
    while pinned < len(items) and _is_instruction(items[pinned]):
        pinned += 1
    starts = [pinned] + [n for n in range(pinned + 1, len(items)) if _is_user_message(items[n])]
    if pinned == len(items):
        return pinned, []
    ends = [*starts[1:], len(items)]
    return pinned, list(zip(starts, ends, strict=True))


def _is_instruction(item: Item) -> bool:
    return item.get("type", "message") == "message" and item.get("role") in ("system", "developer")


def _is_user_message(item: Item) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "user"


def regular_blocks(n_turns: int, first_current: int, policy: WindowPolicy) -> list[Span]:
    """The folds the policy always makes: every turn but the last `keep_last_turns` (at least K, at most
    K + S - 1 stay verbatim), in aligned blocks of `summary_every_turns`, so a fold only ever adds one block
    after the earlier ones. Turns holding the new input are never folded."""
    if policy.keep_last_turns is None:
        return []
    every = policy.summary_every_turns
    excess = n_turns - policy.keep_last_turns
    folded = max(0, excess) // every * every
    folded = min(folded, first_current // every * every)
    return [(start, start + every) for start in range(0, folded, every)]


def next_block(blocks: list[Span], first_current: int, every: int) -> Span | None:
    """One more block, folded early to fit the budget (truncation "auto"); None when nothing older than
    the new input is left verbatim. The last may be short: only an over-budget prompt pays for that."""
    start = blocks[-1][1] if blocks else 0
    if start >= first_current:
        return None
    return (start, min(start + every, first_current))
