"""Property tests: equal histories give equal request bytes, and trimming keeps the prefix stable."""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.context.policy import WindowPolicy
from sidecar.handlers.responses_request import responses_engine_body
from tests.unit.context_helpers import assistant, chat_bytes, item, prompt, user

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), min_size=1, max_size=40
).filter(lambda t: t.strip() != "")


NO_TRIM = WindowPolicy()


def request_bytes(history: list[bytes], new: list[bytes], policy: WindowPolicy = NO_TRIM) -> bytes:
    """Both upstream modes' engine requests for one turn, side by side."""
    p = prompt(history, new, policy=policy)
    body = p.engine_fields({"model": "m"})
    return chat_bytes(p) + b"\n" + responses_engine_body(body, p.items, stream=False)


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


@given(texts)
def test_line_endings_and_unicode_forms_give_the_same_bytes(text: str) -> None:
    nfc = unicodedata.normalize("NFC", text)
    variants = [nfc, unicodedata.normalize("NFD", text), _crlf(nfc), nfc.replace("\n", "\r")]
    out = {request_bytes([user(v), assistant(v)], [user(v)]) for v in variants}
    assert len(out) == 1


@given(texts)
def test_a_string_and_a_single_text_part_give_the_same_bytes(text: str) -> None:
    as_string = request_bytes([assistant(text)], [user(text)])
    as_parts = request_bytes(
        [item({"role": "assistant", "content": [{"type": "output_text", "text": text}]})],
        [item({"content": [{"type": "input_text", "text": text}], "role": "user"})],
    )
    assert as_string == as_parts


arguments = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(
        st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)
    ),
    max_size=5,
)


@given(arguments, st.randoms(use_true_random=False))
def test_key_order_and_float_spelling_in_tool_arguments_give_the_same_bytes(
    args: dict[str, Any], rnd: Any
) -> None:
    keys = list(args)
    rnd.shuffle(keys)
    shuffled = "{" + ",".join(f"{orjson.dumps(k).decode()}: {_spelled(args[k])}" for k in keys) + "}"

    def call(arguments: str) -> list[bytes]:
        return [
            user("go"),
            item({"type": "function_call", "call_id": "c1", "name": "f", "arguments": arguments}),
            item({"type": "function_call_output", "call_id": "c1", "output": "ok"}),
        ]

    assert request_bytes(call(orjson.dumps(args).decode()), [user("next")]) == request_bytes(
        call(shuffled), [user("next")]
    )


def _spelled(value: Any) -> str:
    """Another JSON spelling of the same value: floats as 1.5e0, spaces after separators."""
    if isinstance(value, float) and value == value and abs(value) < 1e15 and value == int(value):
        return f"{value:.1f}e0"
    return orjson.dumps(value).decode()


@given(st.lists(texts, min_size=1, max_size=12))
def test_resolving_the_same_history_twice_gives_identical_bytes(turns: list[str]) -> None:
    history: list[bytes] = []
    for text in turns:
        history += [user(text), assistant(text[::-1])]
    policy = WindowPolicy(keep_last_turns=2, summary_every_turns=3)
    assert request_bytes(history, [], policy) == request_bytes(list(history), [], policy)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(texts, min_size=2, max_size=16),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_each_turn_starts_with_the_last_except_at_folds(turns: list[str], keep: int, every: int) -> None:
    policy = WindowPolicy(keep_last_turns=keep, summary_every_turns=every)
    history: list[bytes] = []
    previous = None
    for text in turns:
        p = prompt(history, [user(text)], policy=policy, instructions="Be brief.")
        body = chat_bytes(p)
        if previous is not None:
            old, old_body = previous
            if old.summaries == p.summaries:
                assert body.startswith(old_body[:-1])
                assert old.fingerprint == p.fingerprint
            else:
                # at a fold one block is added after the earlier ones: the bytes before it are the same
                assert p.summaries[:-1] == old.summaries
                assert old.system is not None and p.system is not None
                assert p.system.startswith(old.system)
                assert body.startswith(b'[{"role":"system","content":' + orjson.dumps(old.system)[:-1])
        previous = (p, body)
        history += [user(text), assistant("ok " + text)]
