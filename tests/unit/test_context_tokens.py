"""Token counts (docs/api.md §7): a tokenizer.json built here with `tokenizers`, the engine's count with
its per-item cache, and the estimate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from sidecar.context.policy import WindowPolicy
from sidecar.context.tokens import ENGINE, ESTIMATE, MESSAGE_OVERHEAD, TOKENIZER, CountCache, TokenCounter
from sidecar.context.window import ContextWindow
from tests.unit.context_helpers import item, prompt, user

WORDS = "the cat sat on a mat and then it slept . hello world question answer"


def build_tokenizer(path: Path) -> Path:
    """A word-level tokenizer.json: one token per word or punctuation mark (no hub download)."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([WORDS], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tokenizer.save(str(path))
    return path


@pytest.fixture
def tokenizer_file(tmp_path: Path) -> Path:
    return build_tokenizer(tmp_path / "tokenizer.json")


def test_a_tokenizer_file_counts_for_its_model(tokenizer_file: Path) -> None:
    window = ContextWindow({"tokenizers": {"tiny": str(tokenizer_file)}})
    counter = window.counter("tiny", WindowPolicy(), None)
    assert counter.source == TOKENIZER
    assert asyncio.run(counter.text("the cat sat on a mat .")) == 7
    assert asyncio.run(counter.text("the cat " * 5000)) == 10000  # off the event loop, same count
    p = prompt([user("the cat sat")], [user("hello world")], counter=counter)
    assert p.input_tokens == 3 + 2 + 2 * MESSAGE_OVERHEAD and p.token_source == TOKENIZER
    assert window.counter("other", WindowPolicy(), None).source == ESTIMATE


def test_engine_counts_are_cached_per_item_so_a_turn_counts_only_what_is_new() -> None:
    calls: list[str] = []

    async def engine(text: str) -> int | None:
        calls.append(text)
        return len(text.split())

    cache = CountCache()
    history = [user("one two"), item({"role": "assistant", "content": "three"})]
    counter = TokenCounter(ENGINE, "m", cache, engine=engine)
    first = asyncio.run(counter.items(history))
    assert first == [2 + MESSAGE_OVERHEAD, 1 + MESSAGE_OVERHEAD] and len(calls) == 2
    counter = TokenCounter(ENGINE, "m", cache, engine=engine)
    asyncio.run(counter.items([*history, user("four five six")]))
    assert calls == ["one two", "three", "four five six"]


def test_an_engine_that_cannot_count_turns_the_counter_into_an_estimate() -> None:
    async def engine(text: str) -> int | None:
        return None

    counter = TokenCounter(ENGINE, "m", CountCache(), engine=engine)
    counts = asyncio.run(counter.items([user("one two")]))
    assert counter.source == ESTIMATE and counts[0] > 0


def test_the_estimate_says_it_is_one() -> None:
    p = prompt([user("abcd" * 10)])
    assert p.token_source == ESTIMATE and p.input_tokens > 10
