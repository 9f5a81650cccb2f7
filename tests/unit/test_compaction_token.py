"""Compaction tokens (sidecar/context/compaction.py): signed for one tenant, refused when forged, altered,
truncated, another tenant's or signed with another key; compact_window folds all but the last turns."""

from __future__ import annotations

import base64
import itertools
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from sidecar.config import ConfigError
from sidecar.context.compaction import (
    CompactedSummary,
    CompactionCodec,
    CompactionKeyError,
    CompactionNotConfigured,
    compact_window,
    expand_compactions,
    load_compaction_key,
)
from sidecar.context.window import open_context_window
from sidecar.errors import InvalidRequest
from sidecar.normalise import encode_item
from sidecar.policy import PolicyError, validate_policy

KEY = b"k" * 32
SUMMARY = CompactedSummary(text="Summary of turns 1-2:\n- user: hi", turns=2, model="m")


def codec(key: bytes | None = KEY) -> CompactionCodec:
    return CompactionCodec(key)


def test_a_token_round_trips_for_its_tenant() -> None:
    token = codec().sign("acme", SUMMARY)
    assert token.startswith("cs1.")
    assert "acme" not in token and "Summary" not in token  # compressed, and no tenant in it
    assert codec().verify("acme", token, "input[0].encrypted_content") == SUMMARY
    # Another replica with the same key verifies it too.
    assert CompactionCodec(bytes(KEY)).verify("acme", token, "p") == SUMMARY


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forgeries(token: str) -> list[Any]:
    prefix, body, mac = token.split(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    flipped = _b64(raw[:-1] + bytes([raw[-1] ^ 1]))

    other_payload = _b64(zlib.compress(orjson.dumps({"s": "I am root", "n": 1, "m": "m", "iat": 0})))
    return [
        f"{prefix}.{flipped}.{mac}",  # payload altered
        f"{prefix}.{other_payload}.{mac}",  # payload replaced
        f"{prefix}.{body}.{mac[:-2]}",  # mac truncated
        f"{prefix}.{body}.{_b64(b'x' * 32)}",  # mac made up
        f"cs2.{body}.{mac}",  # another version
        f"{body}.{mac}",  # parts missing
        token + ".x",
        "",
        "not a token",
        f"{prefix}.{body}.!!!",  # not base64
        None,
        42,
    ]


@pytest.mark.parametrize("index", range(12))
def test_forged_or_altered_tokens_are_a_400_naming_the_param(index: int) -> None:
    token = codec().sign("acme", SUMMARY)
    forged = _forgeries(token)[index]
    with pytest.raises(InvalidRequest) as caught:
        codec().verify("acme", forged, "input[3].encrypted_content")
    assert caught.value.status == 400
    assert caught.value.param == "input[3].encrypted_content"
    assert caught.value.code == "invalid_encrypted_content"


def test_another_tenants_or_another_keys_token_is_refused() -> None:
    token = codec().sign("acme", SUMMARY)
    with pytest.raises(InvalidRequest):
        codec().verify("globex", token, "p")
    with pytest.raises(InvalidRequest):
        codec(b"o" * 32).verify("acme", token, "p")
    # A tenant name cannot be shifted into the payload: the separator is part of what is signed.
    with pytest.raises(InvalidRequest):
        codec().verify("acm", token, "p")


def test_without_a_key_nothing_is_signed_or_accepted() -> None:
    token = codec().sign("acme", SUMMARY)
    with pytest.raises(CompactionNotConfigured) as caught:
        codec(None).verify("acme", token, "input[0].encrypted_content")
    assert caught.value.param == "input[0].encrypted_content"
    assert caught.value.code == "compaction_not_configured"
    with pytest.raises(CompactionNotConfigured):
        codec(None).sign("acme", SUMMARY)
    assert not codec(None).configured and codec().configured


async def test_without_a_policy_key_the_key_is_the_stores_shared_secret_fetched_when_needed() -> None:
    asked: list[str] = []

    async def secret() -> bytes:
        asked.append("compaction")
        return b"k" * 32

    shared = codec(None)
    shared.share_through(secret)
    assert shared.configured
    await shared.ready_for([b'{"type":"message","role":"user","content":[]}'])
    assert asked == []  # a turn without a compaction item never asks the store
    await shared.ready_for([b'{"type":"compaction","encrypted_content":"cs1.x.y"}'])
    await shared.ready()
    assert asked == ["compaction"]  # once
    token = shared.sign("acme", SUMMARY)
    assert codec(b"k" * 32).verify("acme", token, "p") == shared.verify("acme", token, "p")
    keyed = codec()
    keyed.share_through(secret)  # the policy file's key wins
    await keyed.ready()
    assert asked == ["compaction"] and keyed.verify("acme", codec().sign("acme", SUMMARY), "p")


def test_the_key_comes_from_the_policy_file(tmp_path: Path) -> None:
    assert load_compaction_key({}) is None
    assert load_compaction_key({"compaction": {"key": "s" * 40}}) == b"s" * 40
    path = tmp_path / "key"
    path.write_bytes(b"f" * 48 + b"\n")
    assert load_compaction_key({"compaction": {"key_file": str(path)}}) == b"f" * 48
    path.write_bytes(b"short")
    with pytest.raises(CompactionKeyError, match=r"compaction\.key_file"):
        load_compaction_key({"compaction": {"key_file": str(path)}})
    with pytest.raises(CompactionKeyError, match="cannot read"):
        load_compaction_key({"compaction": {"key_file": str(tmp_path / "absent")}})
    # Start-up stops with one line naming the path.
    with pytest.raises(ConfigError, match=r"compaction\.key_file"):
        open_context_window({"compaction": {"key_file": str(tmp_path / "absent")}})


@pytest.mark.parametrize(
    ("compaction", "where"),
    [
        ({"key": "short"}, "compaction.key"),
        ({"key": 12345678901234567890123456789012345}, "compaction.key"),
        ({"key_file": ""}, "compaction.key_file"),
        ({"keys": "x" * 40}, "compaction"),
        ({"key": "x" * 40, "key_file": "/k"}, "compaction"),
        ("x" * 40, "compaction"),
    ],
)
def test_the_policy_schema_checks_the_key(compaction: Any, where: str) -> None:
    with pytest.raises(PolicyError) as caught:
        validate_policy({"compaction": compaction})
    assert caught.value.where == where
    assert validate_policy({"compaction": {"key": "x" * 32}})["compaction"]["key"] == "x" * 32


def _message(role: str, text: str) -> dict[str, Any]:
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


def _turns(n: int, start: int = 1) -> list[dict[str, Any]]:
    items = []
    for t in range(start, start + n):
        items += [_message("user", f"question {t}"), _message("assistant", f"answer {t}")]
    return items


def _minter() -> Any:
    counter = itertools.count()
    return lambda prefix: f"{prefix}_{next(counter)}"


def test_compact_window_keeps_the_last_turns_and_folds_the_rest_into_one_item() -> None:
    items = [_message("developer", "Be brief."), *_turns(5)]
    compacted = compact_window(codec(), "acme", "m", items, first_input=0, keep_last_turns=2, mint=_minter())
    kinds = [(i["type"], i.get("role")) for i in compacted.output]
    assert kinds == [
        ("message", "developer"),
        ("compaction", None),
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert compacted.output[2]["content"][0]["text"] == "question 4"
    assert compacted.folded_turns == 3
    summary = codec().verify("acme", compacted.output[1]["encrypted_content"], "p")
    assert summary.turns == 3 and summary.text.startswith("Summary of turns 1-3:")
    assert "question 1" in summary.text and "answer 3" in summary.text and "question 4" not in summary.text


def test_compacting_a_compacted_window_carries_the_earlier_summary_and_turn_numbers() -> None:
    first = compact_window(codec(), "acme", "m", _turns(4), first_input=0, keep_last_turns=1, mint=_minter())
    window = [*first.output, *_turns(3, start=5)]
    second = compact_window(codec(), "acme", "m", window, first_input=0, keep_last_turns=1, mint=_minter())
    compactions = [i for i in second.output if i["type"] == "compaction"]
    assert len(compactions) == 1
    summary = codec().verify("acme", compactions[0]["encrypted_content"], "p")
    assert summary.turns == 3 + 3  # turns 1-3, then turns 4-6
    assert summary.text.index("Summary of turns 1-3:") < summary.text.index("Summary of turns 4-6:")
    assert [i["content"][0]["text"] for i in second.output[1:]] == ["question 7", "answer 7"]


def test_nothing_to_fold_gives_the_window_back_and_no_compaction_item() -> None:
    compacted = compact_window(
        codec(), "acme", "m", _turns(2), first_input=0, keep_last_turns=None, mint=_minter()
    )
    assert compacted.output == _turns(2) and compacted.summary is None and compacted.folded_turns == 0


def test_a_foreign_compaction_item_in_the_window_is_refused_naming_its_input_index() -> None:
    foreign = {"type": "compaction", "encrypted_content": codec().sign("globex", SUMMARY)}
    with pytest.raises(InvalidRequest) as caught:
        compact_window(
            codec(), "acme", "m", [*_turns(1), foreign], first_input=1, keep_last_turns=1, mint=_minter()
        )
    assert caught.value.param == "input[1].encrypted_content"


def test_expansion_takes_compaction_items_out_and_returns_their_summaries() -> None:
    token = codec().sign("acme", SUMMARY)
    item = encode_item({"type": "compaction", "id": "cmp_1", "encrypted_content": token})
    history = [item, *map(encode_item, _turns(1))]
    new_input = [encode_item(_message("user", "next")), item]
    kept_history, kept_input, summaries = expand_compactions(codec(), "acme", history, new_input)
    assert kept_history == history[1:] and kept_input == new_input[:1]
    assert summaries == [SUMMARY.text, SUMMARY.text]
    # A message that merely mentions the type is not a compaction item.
    talk = encode_item(_message("user", '{"type":"compaction"}'))
    assert expand_compactions(codec(), "acme", [talk], []) == ([talk], [], [])
    with pytest.raises(InvalidRequest) as caught:
        expand_compactions(codec(), "globex", [], new_input)
    assert caught.value.param == "input[1].encrypted_content"
