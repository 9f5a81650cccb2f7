"""Prompt packs and per-model policies (docs/api.md §6, §9): loaded once, chosen per request."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sidecar.config import ConfigError
from sidecar.context.packs import NO_PACK, choose_pack, load_pack, load_packs
from sidecar.context.policy import load_policies, policy_for
from sidecar.context.window import open_context_window
from sidecar.errors import InvalidRequest
from tests.unit.context_helpers import prompt, user

PACK = {
    "system": "You are the help desk.\r\nBe brief.",
    "few_shot": [{"role": "user", "content": "Nails?"}, {"role": "assistant", "content": "Aisle 4."}],
    "tools": [{"type": "function", "parameters": {"type": "object", "b": 1.0, "a": 2}, "name": "stock"}],
}


def test_a_pack_is_canonicalised_once() -> None:
    pack = load_pack("support", PACK)
    assert pack.system == "You are the help desk.\nBe brief."
    assert [orjson.loads(i)["content"][0]["text"] for i in pack.few_shot] == ["Nails?", "Aisle 4."]
    assert list(pack.tools[0]) == ["name", "parameters", "type"]  # sorted keys
    assert pack.chat_tools[0] == {
        "type": "function",
        "function": {"name": "stock", "parameters": {"a": 2, "b": 1.0, "type": "object"}},
    }
    reordered = {
        **PACK,
        "tools": [{"name": "stock", "type": "function", "parameters": {"a": 2, "b": 1.0, "type": "object"}}],
    }
    assert load_pack("support", reordered) == pack


def test_the_pack_comes_first_then_instructions_then_history() -> None:
    pack = load_pack("support", PACK)
    p = prompt(
        [user("hi")],
        [user("there")],
        pack=pack,
        instructions="Today is Monday.",
        request_tools=[{"type": "x"}],
    )
    assert p.system == "You are the help desk.\nBe brief.\n\nToday is Monday."
    assert p.items[:2] == list(pack.few_shot)
    assert p.first_input == 3
    messages = p.chat_messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "user"]
    fields = p.engine_fields({"model": "m", "instructions": "Today is Monday.", "tools": [{"type": "x"}]})
    assert fields["instructions"] == p.system
    assert fields["tools"] == [*pack.tools, {"type": "x"}]


def test_without_a_pack_the_client_fields_are_untouched() -> None:
    p = prompt([user("hi")], [user("there")], instructions="Be kind.")
    body = {"model": "m", "instructions": "Be kind."}
    assert p.engine_fields(body) is body


def test_the_fingerprint_covers_pack_and_tools_only() -> None:
    pack = load_pack("support", PACK)
    a = prompt([user("hi")], [user("one")], pack=pack, instructions="x")
    b = prompt([user("hi"), user("more")], [user("two")], pack=pack, instructions="y")
    assert a.fingerprint == b.fingerprint
    assert prompt([user("hi")], pack=NO_PACK).fingerprint != a.fingerprint
    assert prompt([user("hi")], pack=pack, request_tools=[{"type": "y"}]).fingerprint != a.fingerprint


def test_the_fingerprint_hashes_tools_in_one_form_whichever_route_named_them() -> None:
    pack = load_pack("support", PACK)
    flat = {"type": "function", "name": "find", "parameters": {"type": "object"}}
    chat = {"type": "function", "function": {"name": "find", "parameters": {"type": "object"}}}
    on_responses = prompt([user("hi")], pack=pack, request_tools=[flat])
    on_chat = prompt([user("hi")], pack=pack, request_tools=[chat], chat_tools=True)
    assert on_chat.fingerprint == on_responses.fingerprint
    assert on_chat.tools == [*pack.chat_tools, chat]  # the engine still gets the route's own form


def test_choosing_a_pack() -> None:
    packs = load_packs({"packs": {"support": PACK}})
    assert choose_pack(packs, "support", None).name == "support"
    assert choose_pack(packs, None, "support").name == "support"
    assert choose_pack(packs, None, None) is NO_PACK
    with pytest.raises(InvalidRequest) as unknown:
        choose_pack(packs, "sales", "support")
    assert unknown.value.param == "X-Prompt-Pack" and "'sales'" in unknown.value.message


def test_the_model_picks_its_policy_else_default() -> None:
    policies = load_policies(
        {"policies": {"default": {"keep_last_turns": 8}, "gemma": {"keep_last_turns": 4, "pack": "p"}}}
    )
    assert policy_for(policies, "gemma").keep_last_turns == 4
    assert policy_for(policies, "other").keep_last_turns == 8
    assert policy_for(policies, None).summary_every_turns == 4
    assert not policy_for({}, "x").trims


@pytest.mark.parametrize("summariser", ["upstream", "http"])
def test_the_upstream_and_http_summarisers_are_served(summariser: str) -> None:
    policy = {"policies": {"gemma": {"summariser": summariser, "summariser_url": "http://x/summarise"}}}
    served = open_context_window(policy).policies["gemma"]
    assert served.summariser == summariser
    assert served.summariser_url == ("http://x/summarise" if summariser == "http" else None)


@pytest.mark.parametrize("url", ["ftp://x/summarise", "summariser.internal:9000", ""])
def test_an_http_summariser_without_an_http_url_stops_start_up_naming_it(url: str) -> None:
    policy = {"policies": {"gemma": {"summariser": "http", "summariser_url": url}}}
    with pytest.raises(ConfigError, match=r"policies\.gemma\.summariser_url: an http:// or https:// URL"):
        open_context_window(policy)


def test_an_unreadable_tokenizer_stops_start_up_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tokenizers\.gemma: cannot load"):
        open_context_window({"tokenizers": {"gemma": str(tmp_path / "missing.json")}})
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"tokenizers\.gemma: cannot load"):
        open_context_window({"tokenizers": {"gemma": str(tmp_path / "bad.json")}})
