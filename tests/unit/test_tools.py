"""Tool definitions: one encoding for the engine, one form for the fingerprint, whatever the spelling."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.errors import InvalidRequest
from sidecar.normalise import canonical_json
from sidecar.wire.tools import canonical_tools, chat_tool, responses_tool, tools_bytes

texts = st.text(max_size=12)
schemas = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 100) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
function_tools = st.fixed_dictionaries(
    {"type": st.just("function"), "name": st.text(min_size=1, max_size=12)},
    optional={
        "description": texts,
        "parameters": st.dictionaries(texts, schemas, max_size=3),
        "strict": st.booleans(),
    },
)


@given(function_tools, st.randoms())
def test_a_tool_in_any_key_order_is_one_encoding(tool: dict[str, Any], rnd: Any) -> None:
    keys = list(tool)
    rnd.shuffle(keys)
    shuffled = {key: tool[key] for key in keys}
    assert orjson.dumps(canonical_tools([shuffled])) == orjson.dumps(canonical_tools([tool]))


@given(function_tools)
def test_the_chat_form_of_a_canonical_tool_is_canonical_and_flattens_back(tool: dict[str, Any]) -> None:
    (canonical,) = canonical_tools([tool]) or []
    chat = chat_tool(canonical)
    assert orjson.dumps(chat) == canonical_json(chat)
    assert tools_bytes([responses_tool(chat)]) == tools_bytes([canonical])


def test_other_tools_pass_as_given_and_no_tools_cost_nothing() -> None:
    search = {"type": "web_search"}
    assert chat_tool(search) is search and responses_tool(search) is search
    assert canonical_tools(None) is None and canonical_tools([]) == []
    with pytest.raises(InvalidRequest) as info:
        canonical_tools({"type": "function"})
    assert info.value.param == "tools"
