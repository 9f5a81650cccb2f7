"""Stored summaries (docs/api.md §7) for the `upstream` and `http` summarisers: a folded block's summary is
read from the store (with the history, by its resolve), so every replica sends the same bytes; a block whose
summary is not stored yet is not folded yet (its turns stay verbatim, the prompt only grows at its end) until
the writer has stored one."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..wire.items import Item
from .policy import WindowPolicy
from .summarise import template_summary
from .trim import Span

if TYPE_CHECKING:
    from ..store.base import Store

TEMPLATE = "template"


@dataclass(frozen=True, slots=True)
class FoldedBlock:
    """One block of turns to fold: `key` names it in the store (the summariser and the block's item bytes,
    so each branch of a conversation has its own), `template` is its template summary."""

    key: str
    first_turn: int  # 1-based
    last_turn: int
    items: tuple[Item, ...]
    template: str

    @property
    def heading(self) -> str:
        """The template summary's first line ('Summary of turns 5-8:'): every summariser's text starts so."""
        return self.template.split("\n", 1)[0]


def summariser_identity(policy: WindowPolicy) -> str:
    """What makes two summaries of the same turns different: the summariser and where it lives."""
    return f"{policy.summariser}\x00{policy.summariser_url or ''}"


def block_key(identity: str, raw: Sequence[bytes]) -> str:
    digest = hashlib.blake2b(identity.encode(), digest_size=16)
    for item in raw:
        digest.update(len(item).to_bytes(8, "big"))
        digest.update(item)
    return digest.hexdigest()


def folded_block(
    identity: str, items: list[Item], raw: Sequence[bytes], spans: list[Span], block: Span
) -> FoldedBlock:
    first, last = block
    turns = [items[slice(*spans[t])] for t in range(first, last)]
    start, end = spans[first][0], spans[last - 1][1]
    return FoldedBlock(
        key=block_key(identity, raw[start:end]),
        first_turn=first + 1,
        last_turn=last,
        items=tuple(item for turn in turns for item in turn),
        template=template_summary(first + 1, turns),
    )


class StoredSummaries:
    """The stored summaries of one conversation's blocks, as build_prompt folds them. `writable`: a turn's
    own prompt, which may store a template summary when its budget cannot wait for the summariser (reads
    — resolve, the previous turn's prompt — never write). `resolved`: every summary the conversation had
    when its history was resolved (History.summaries), read in that same round trip: then nothing is read
    from the store; without it (a history held from an earlier turn), what is needed is read once."""

    def __init__(
        self,
        store: Store,
        tenant: str,
        conversation_id: str,
        policy: WindowPolicy,
        *,
        writable: bool,
        seen: dict[str, bytes | None] | None = None,
        resolved: Mapping[str, bytes] | None = None,
    ) -> None:
        self.store = store
        self.tenant = tenant
        self.conversation_id = conversation_id
        self.identity = summariser_identity(policy)
        self.writable = writable
        # What was read for this turn (its prompt and the one it continues share it): one snapshot, one
        # round trip for both.
        self.seen = {} if seen is None else seen
        self.resolved = resolved

    async def _read(self, keys: list[str]) -> list[bytes | None]:
        missing = [key for key in keys if key not in self.seen]
        if missing and self.resolved is not None:
            self.seen.update((key, self.resolved.get(key)) for key in missing)
        elif missing:
            found = await self.store.read_summaries(self.tenant, self.conversation_id, missing)
            self.seen.update(zip(missing, found, strict=True))
        return [self.seen[key] for key in keys]

    async def regular(
        self, items: list[Item], raw: Sequence[bytes], spans: list[Span], blocks: list[Span]
    ) -> tuple[list[Span], list[str], list[FoldedBlock]]:
        """The policy's folds that have a stored summary (up to the first that has none) with their texts,
        and every block still without one (for the writer). The blocks after the folded ones stay verbatim
        for now, unless the budget needs them (`forced`)."""
        folded = [folded_block(self.identity, items, raw, spans, block) for block in blocks]
        stored = await self._read([b.key for b in folded])
        texts: list[str] = []
        for text in stored:
            if text is None:
                break
            texts.append(text.decode())
        ready = len(texts)
        pending = [block for block, text in zip(folded, stored, strict=True) if text is None]
        return blocks[:ready], texts, pending

    async def forced(self, items: list[Item], raw: Sequence[bytes], spans: list[Span], block: Span) -> str:
        """A block folded now to fit the budget: its stored summary, else the template one — stored first
        when writable, so the summary this turn sends is the one every later turn sends."""
        folded = folded_block(self.identity, items, raw, spans, block)
        [text] = await self._read([folded.key])
        if text is not None:
            return text.decode()
        if not self.writable:
            return folded.template
        kept = await self.store.add_summary(
            self.tenant, self.conversation_id, folded.key, folded.template.encode()
        )
        self.seen[folded.key] = kept.text if kept is not None else None
        return kept.text.decode() if kept is not None else folded.template
