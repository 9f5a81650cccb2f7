"""Folding the window (docs/api.md §7): append-only summary blocks, the budget, `truncation`."""

from __future__ import annotations

import pytest

from sidecar.context.policy import WindowPolicy
from sidecar.context.summarise import template_summary
from sidecar.context.trim import regular_blocks, split_turns
from sidecar.errors import ContextLengthExceeded
from tests.unit.context_helpers import assistant, chat_bytes, item, prompt, user

FOLDING = WindowPolicy(keep_last_turns=2, summary_every_turns=2)


def conversation(turns: int) -> list[bytes]:
    history: list[bytes] = []
    for n in range(1, turns + 1):
        history += [user(f"question {n}"), assistant(f"answer {n}")]
    return history


def test_turns_start_at_user_messages_and_leading_instructions_are_pinned() -> None:
    items = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "o"},
        {"role": "user", "content": "u2"},
    ]
    assert split_turns(items) == (1, [(1, 5), (5, 6)])
    assert split_turns([{"role": "system", "content": "s"}]) == (1, [])


@pytest.mark.parametrize(
    ("n_turns", "folded"), [(1, 0), (2, 0), (3, 0), (4, 2), (5, 2), (6, 4), (7, 4), (8, 6)]
)
def test_regular_folds_keep_k_to_k_plus_s_minus_1_turns(n_turns: int, folded: int) -> None:
    blocks = regular_blocks(n_turns, n_turns - 1, FOLDING)
    assert (blocks[-1][1] if blocks else 0) == folded
    assert all(end - start == 2 for start, end in blocks)


def test_no_policy_sends_everything_verbatim() -> None:
    history = conversation(10)
    p = prompt(history, [user("next")])
    assert p.items == [*history, user("next")] and p.system is None and p.summarised_turns == 0


def test_folded_turns_become_summary_blocks_and_the_rest_stays_verbatim() -> None:
    history = conversation(5)
    p = prompt(history, [user("question 6")], policy=FOLDING)
    assert p.summarised_turns == 4
    assert p.summaries == (
        "Summary of turns 1-2:\n- user: question 1\n- assistant: answer 1\n- user: question 2\n"
        "- assistant: answer 2",
        "Summary of turns 3-4:\n- user: question 3\n- assistant: answer 3\n- user: question 4\n"
        "- assistant: answer 4",
    )
    assert p.items == [*history[8:], user("question 6")]
    assert p.first_input == 2
    messages = p.chat_messages()
    assert messages[0]["role"] == "system" and messages[0]["content"] == "\n\n".join(p.summaries)
    assert [m["content"] for m in messages[1:]] == ["question 5", "answer 5", "question 6"]


def test_the_summary_is_a_pure_function_of_the_turns_and_cuts_long_text() -> None:
    turn = [{"type": "message", "role": "user", "content": "x" * 300}]
    text = template_summary(3, [turn])
    assert text.startswith("Summary of turn 3:\n- user: " + "x" * 200 + "…")
    assert template_summary(3, [turn]) == text


def test_between_folds_the_prompt_only_grows_at_its_end_and_at_a_fold_before_the_new_block() -> None:
    history: list[bytes] = []
    previous = None
    folds = 0
    for n in range(1, 16):
        new = [user(f"question {n} " + "words " * 5)]
        p = prompt(history, new, policy=FOLDING, instructions="Be brief.")
        body = chat_bytes(p)
        if previous is not None:
            old_p, old_body = previous
            if p.summaries == old_p.summaries:
                assert body.startswith(old_body[:-1]) and p.fingerprint == old_p.fingerprint
            else:
                folds += 1
                assert p.summaries[: len(old_p.summaries)] == old_p.summaries  # append-only
                assert p.system is not None and old_p.system is not None
                assert p.system.startswith(old_p.system)  # the bytes before the new block stay
                assert p.fingerprint != old_p.fingerprint
        previous = (p, body)
        history += [*new, assistant(f"answer {n}")]
    assert folds == 6  # one fold every summary_every_turns turns


def test_over_budget_is_refused_unless_truncation_is_auto() -> None:
    history = conversation(12)
    tight = WindowPolicy(keep_last_turns=8, summary_every_turns=2, max_input_tokens=60)
    with pytest.raises(ContextLengthExceeded) as refused:
        prompt(history, [user("next")], policy=tight)
    assert refused.value.code == "context_length_exceeded" and refused.value.param == "input"
    fitted = prompt(history, [user("next")], policy=tight, truncation="auto")
    assert fitted.input_tokens <= 60
    assert fitted.items[-1] == user("next")
    assert fitted.summarised_turns > 4  # folded earlier than the policy alone would


def test_auto_drops_the_oldest_summary_text_when_folding_is_not_enough() -> None:
    history = conversation(12)
    tiny = WindowPolicy(keep_last_turns=1, summary_every_turns=2, max_input_tokens=30)
    fitted = prompt(history, [user("next")], policy=tiny, truncation="auto")
    assert fitted.dropped_summaries > 0 and fitted.input_tokens <= 30


def test_an_input_that_cannot_fit_alone_is_refused_even_with_auto() -> None:
    tiny = WindowPolicy(keep_last_turns=1, max_input_tokens=10)
    with pytest.raises(ContextLengthExceeded) as refused:
        prompt(conversation(2), [user("word " * 100)], policy=tiny, truncation="auto")
    assert "alone" in refused.value.message


def test_pinned_instructions_are_never_folded() -> None:
    history = [item({"role": "developer", "content": "Speak French."}), *conversation(6)]
    p = prompt(history, [user("next")], policy=FOLDING)
    assert p.items[0] == history[0] and p.summarised_turns == 4
