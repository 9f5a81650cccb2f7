"""Hypothesis strategies for bad (and some good) requests to every stateful route of the sidecar.

A generated `FuzzRequest` does not know the store: ids that should name something real are `Ref`s, resolved
when the request is sent against what the accepted requests so far have created (`tests/fuzz/model.py`), so
a strategy can aim at live, deleted and other tenants' ids without depending on state. Bodies are near-valid
shapes whose every field may be swapped for a wild value, or raw bytes (bad UTF-8, lone surrogates, deep
nesting, non-objects, oversized).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

if TYPE_CHECKING:
    import random

# Conversation ids the fuzz run names itself (so its writes land on a few conversations and collide), and
# the two tenants of the sidecar's trusted_header mode: ids of the other one are "foreign".
CLIENT_CONVERSATIONS = ("fz-a", "fz-b", "fz-c")
TENANTS = ("t1", "t2")
# The sidecar under fuzz refuses bodies above this (CONVOSTORE_MAX_BODY_BYTES), so 413 is reached cheaply.
MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class Ref:
    """An id resolved at send time: `kind` is conversation, response or item; `index` picks one of the
    known ids of that kind (live or deleted); `foreign` picks one of the other tenant's."""

    kind: str
    index: int
    foreign: bool = False


@dataclass(frozen=True)
class Raw:
    """JSON text spliced into a body as it is: what orjson cannot write (lone surrogates, 2**70)."""

    text: bytes


@dataclass
class FuzzRequest:
    route: str  # "METHOD /pattern", as the router names it
    method: str
    path: list[str | Ref]  # segments joined by "/", each a literal or a Ref
    query: list[tuple[str, str | Ref]] = field(default_factory=list)
    headers: dict[str, str | Ref] = field(default_factory=dict)
    body: Any = None  # a JSON-able value with Ref/Raw inside, or bytes sent as they are; None: no body
    tenant: str | None = "t1"  # X-Tenant-Id (None: the header is left out)


def dice(draw: st.DrawFn) -> random.Random:
    """Draws spread evenly: hypothesis's own numbers cluster on edge values and repeat them, which suits
    values but starves all but a few choices between shapes. Not replayable, so a failure report carries
    the exact request instead (and the runs skip shrinking)."""
    return draw(st.randoms(use_true_random=True))


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, picked with these weights. `st.one_of` favours its first branches and values
    it has not produced yet, which would starve the valid shapes the stateful checks need."""
    weights = [w for w, _ in choices]

    @st.composite
    def pick(draw: st.DrawFn) -> Any:
        chooser = dice(draw)
        return draw(choices[chooser.choices(range(len(choices)), weights)[0]][1])

    return pick()


# --------------------------------------------------------------------------------------------------
# values

SPECIAL_STRINGS = (
    "",
    " ",
    "\u0000",
    "\r\n\r",
    "e\u0301",  # NFC folds it to é
    "\ufeff",
    "\U0001d54f" * 3,  # outside the BMP
    "💥" * 64,
    "x" * 70_000,
    "{",
    '{"a": [1, 2]}',
    "null",
    "../../etc/passwd",
    "%2F..%2F",
    "conv_" + "0" * 24,
    "resp_" + "f" * 32,
    "msg_" + "a" * 32,
    "resp_000000000000ffffffff000000000000",
    "a:b",
    "{tag}",
)
RAW_VALUES = (
    Raw(b'"\\ud800"'),  # lone high surrogate
    Raw(b'"\\udfff tail"'),  # lone low surrogate
    Raw(b'"a\\ud83d"'),  # a high surrogate at the end of a string
    Raw(b"1180591620717411303424"),  # 2**70: beyond any 64-bit integer
    Raw(b"-9223372036854775809"),
    Raw(b"1e400"),  # overflows a double
    Raw(b"[" * 200 + b"]" * 200),  # deeper than the sidecar accepts
    Raw(b'{"a":' * 150 + b"1" + b"}" * 150),
)

strings = st.one_of(st.text(max_size=30), st.sampled_from(SPECIAL_STRINGS))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    strings,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
# Any value at all; now and then JSON that orjson cannot write (and the sidecar must refuse).
wild = weighted((12, json_values), (1, st.sampled_from(RAW_VALUES)))


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid value, else anything at all."""
    return weighted((8, valid), (1, wild))


def ids(kind: str) -> st.SearchStrategy[Any]:
    """An id of `kind`: a known one (ours or the other tenant's), or a bad or unknown one."""
    return weighted(
        (6, st.builds(Ref, st.just(kind), st.integers(0, 50))),
        (1, st.builds(Ref, st.just(kind), st.integers(0, 50), st.just(True))),
        (3 if kind == "conversation" else 0, st.sampled_from(CLIENT_CONVERSATIONS)),
        (1, strings),
    )


path_ids = {kind: ids(kind) for kind in ("conversation", "response", "item")}


def fields(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """An object with near-valid fields; sometimes a required one is missing, or an unknown one added."""
    base = st.fixed_dictionaries(
        {k: maybe(v) for k, v in required.items()}, optional={k: maybe(v) for k, v in optional.items()}
    )
    extra = st.dictionaries(st.sampled_from(["unknown", "type", "id", "__proto__"]), wild, max_size=1)
    dropped = st.sets(st.sampled_from(sorted(required)), max_size=1) if required else st.just(set())
    return st.builds(
        lambda body, more, drop: {k: v for k, v in {**body, **more}.items() if k not in drop},
        base,
        weighted((8, st.just({})), (1, extra)),
        weighted((8, st.just(set())), (1, dropped)),
    )


text = st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(["hi", "Hello\r\nthere", "e\u0301"]))
roles = st.sampled_from(["user", "assistant", "system", "developer"])
chat_roles = st.sampled_from(["user", "assistant", "system", "developer", "tool"])
part_types = st.sampled_from(
    ["input_text", "output_text", "text", "refusal", "input_image", "input_file", "input_audio", "bogus"]
)
parts = st.lists(
    st.one_of(
        fields({"type": part_types, "text": text}, {"annotations": st.just([])}),
        fields({"type": st.just("input_image"), "image_url": text}, {"detail": st.just("auto")}),
        fields({"type": st.just("refusal"), "refusal": text}, {}),
        text,
    ),
    max_size=3,
)
content = st.one_of(text, parts)
item_types = st.sampled_from(
    [
        *("message", "function_call", "function_call_output", "reasoning", "item_reference", "compaction"),
        *("web_search_call", "mcp_call", "", "MESSAGE"),
    ]
)
items = st.one_of(
    fields({"type": st.just("message"), "role": roles, "content": content}, {"id": ids("item")}),
    fields({"role": roles, "content": content}, {}),
    fields(
        {"type": st.just("function_call"), "call_id": text, "name": text, "arguments": text},
        {"status": st.just("completed")},
    ),
    fields({"type": st.just("function_call_output"), "call_id": text, "output": content}, {}),
    fields({"type": st.just("item_reference"), "id": ids("item")}, {}),
    fields({"type": item_types}, {"summary": st.just([]), "encrypted_content": text}),
)
item_lists = weighted((8, st.lists(items, min_size=1, max_size=4)), (1, st.just([])))
tool_calls = st.lists(
    fields(
        {"id": text, "type": st.just("function"), "function": fields({"name": text, "arguments": text}, {})},
        {},
    ),
    max_size=2,
)
messages = st.one_of(
    fields({"role": chat_roles, "content": maybe(content)}, {"tool_calls": tool_calls, "tool_call_id": text}),
    fields({"role": st.just("tool"), "content": content, "tool_call_id": text}, {}),
)
message_lists = weighted((8, st.lists(messages, min_size=1, max_size=3)), (1, st.just([])))
metadata = st.dictionaries(st.text(max_size=70), weighted((6, st.text(max_size=20)), (1, wild)), max_size=3)
tools = st.lists(
    fields({"type": st.just("function"), "name": text}, {"parameters": st.just({"type": "object"})}),
    max_size=2,
)
includes = st.lists(st.sampled_from(["message.output_text.logprobs", "reasoning.encrypted_content", "x"]))
booleans = st.booleans()


# --------------------------------------------------------------------------------------------------
# headers, query strings and whole bodies

HEADER_STRINGS = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40),
    st.sampled_from(
        ["", " ", "x" * 300, "é", "\t", 'W/"1"', '"2"', "*", "-1", "1.5", "\u00b2", "\u0661", "9" * 5000]
    ),
)
idempotency_keys = weighted((3, st.sampled_from(["key-1", "key-2", "key-3"])), (1, HEADER_STRINGS))
if_match = weighted((3, st.integers(0, 6).map(str)), (1, HEADER_STRINGS))


@st.composite
def headers(draw: st.DrawFn, *, writes: bool) -> dict[str, str | Ref]:
    chosen: dict[str, str | Ref] = {}
    roll = dice(draw)
    if writes and roll.random() < 0.25:
        chosen["Idempotency-Key"] = draw(idempotency_keys)
    if writes and roll.random() < 0.2:
        chosen["If-Match"] = draw(if_match)
    if roll.random() < 0.15:
        chosen["X-Prompt-Pack"] = draw(HEADER_STRINGS)
    if roll.random() < 0.05:
        chosen["Content-Type"] = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded"]))
    return chosen


def json_body(shape: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the route's shape; sometimes any JSON value, or bytes that are not (all) JSON."""
    broken = st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                b"",
                b"{",
                b'{"role": "user", "content": "\xff\xfe"}',  # bad UTF-8 inside a string
                b'{"role": "user", "content": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8
                b'{"a": 1, "a": 2}',
                b"[" * 2000 + b"]" * 2000,
                b'{"x": "' + b"y" * (MAX_BODY_BYTES + 10) + b'"}',  # over the body limit
                b"\x00" * 16,
            ]
        ),
    )
    return weighted((12, shape), (1, wild), (1, broken))


pagination = st.lists(
    st.tuples(
        st.sampled_from(["limit", "order", "after", "include", "before"]),
        st.one_of(
            st.sampled_from(
                ["1", "20", "100", "0", "101", "-1", "\u00b2", "\uff11", "9" * 5000, "asc", "desc", ""]
            ),
            ids("item"),
            HEADER_STRINGS,
        ),
    ),
    max_size=3,
)


# --------------------------------------------------------------------------------------------------
# one strategy per route


def _request(
    route: str, path: list[Any], *, body: Any = None, query: Any = None, writes: bool = False
) -> st.SearchStrategy[FuzzRequest]:
    method = route.split(" ", 1)[0]
    return st.builds(
        FuzzRequest,
        route=st.just(route),
        method=st.just(method),
        path=st.tuples(*[p if isinstance(p, st.SearchStrategy) else st.just(p) for p in path]).map(list),
        query=query if query is not None else st.just([]),
        headers=headers(writes=writes or method != "GET"),
        body=body if body is not None else st.none(),
        tenant=weighted((12, st.just("t1")), (4, st.just("t2")), (1, st.none()), (1, HEADER_STRINGS)),
    )


C, R, ITEM = path_ids["conversation"], path_ids["response"], path_ids["item"]
create_response = fields(
    {"model": st.just("fake-model"), "input": st.one_of(text, item_lists)},
    {
        "previous_response_id": ids("response"),
        "conversation": st.one_of(ids("conversation"), st.builds(lambda i: {"id": i}, ids("conversation"))),
        "store": booleans,
        "stream": booleans,
        "instructions": text,
        "metadata": metadata,
        "tools": tools,
        "include": includes,
        "background": st.just(False),  # a background run writes later: beyond what the model follows
        "max_output_tokens": st.integers(-1, 64),
    },
)
chat_body = fields(
    {"model": st.just("fake-model"), "messages": message_lists},
    {"stream": booleans, "stream_options": fields({}, {"include_usage": booleans}), "tools": tools},
)
store_response_body = st.one_of(
    fields({"output": item_lists}, {"response_id": ids("response"), "previous_response_id": ids("response")}),
    fields({"message": messages}, {"previous_response_id": ids("response")}),
    fields(
        {
            "response": st.one_of(
                fields({"object": st.just("response"), "output": item_lists}, {"model": text}),
                fields(
                    {
                        "object": st.just("chat.completion"),
                        "choices": st.lists(fields({"message": messages}, {}), max_size=2),
                    },
                    {"usage": fields({"prompt_tokens": st.integers(0, 9)}, {})},
                ),
            )
        },
        {},
    ),
)
branch = {"previous_response_id": ids("response")}
append_body = st.one_of(
    fields(
        {"role": chat_roles, "content": content}, {"tool_calls": tool_calls, "tool_call_id": text, **branch}
    ),
    fields({"messages": message_lists}, branch),
    fields({"items": item_lists}, branch),
)


def _not_blank(value: Any) -> bool:
    return not isinstance(value, str) or bool(value.strip())


@st.composite
def chat_request(draw: st.DrawFn) -> FuzzRequest:
    request = draw(_request("POST /v1/chat/completions", ["v1", "chat", "completions"], writes=True))
    request.body = draw(json_body(chat_body))
    which = draw(st.sampled_from(["conversation", "conversation", "previous", "both"]))
    # A blank header would make the call a pass-through to the engine: not the stateful route.
    if which in ("conversation", "both"):
        request.headers["X-Conversation-Id"] = draw(C.filter(_not_blank))
    if which in ("previous", "both"):
        request.headers["X-Previous-Response-Id"] = draw(R.filter(_not_blank))
    return request


@st.composite
def socket_handshake(draw: st.DrawFn) -> FuzzRequest:
    """`GET /v1/responses` asking for a WebSocket with a handshake that never completes (a completed one
    leaves HTTP): no version aiohttp accepts, so always a 4xx, which must carry the OpenAI error body."""
    request = draw(_request("GET /v1/responses", ["v1", "responses"]))
    request.headers |= {
        "Upgrade": draw(st.sampled_from(["websocket", "WebSocket"])),  # else the engine's plain GET
        "Connection": draw(st.sampled_from(["Upgrade", "keep-alive, Upgrade", "close"])),
        "Sec-WebSocket-Version": draw(st.one_of(st.sampled_from(["", "8", "13", "14"]), HEADER_STRINGS)),
    }
    # Never a valid key (24 base64 characters of 16 bytes): aiohttp takes versions 7, 8 and 13.
    key = draw(st.one_of(st.none(), st.sampled_from(["", "c2hvcnQ=", "not base64!"]), HEADER_STRINGS))
    if key is not None:
        request.headers["Sec-WebSocket-Key"] = key
    return request


compact_body = fields(
    {"model": st.just("fake-model")},
    {
        "input": st.one_of(text, item_lists),
        "previous_response_id": ids("response"),
        "instructions": text,
        "metadata": metadata,
    },
)


ROUTES: dict[str, st.SearchStrategy[FuzzRequest]] = {
    "POST /v1/responses": _request(
        "POST /v1/responses", ["v1", "responses"], body=json_body(create_response), writes=True
    ),
    "GET /v1/responses": socket_handshake(),
    "POST /v1/responses/input_tokens": _request(
        "POST /v1/responses/input_tokens",
        ["v1", "responses", "input_tokens"],
        body=json_body(create_response),
    ),
    "POST /v1/responses/compact": _request(
        "POST /v1/responses/compact", ["v1", "responses", "compact"], body=json_body(compact_body)
    ),
    "GET /v1/responses/{response_id}": _request(
        "GET /v1/responses/{response_id}",
        ["v1", "responses", R],
        query=st.lists(
            st.tuples(
                st.sampled_from(["stream", "starting_after"]),
                st.one_of(st.sampled_from(["true", "false", "0", "-1", "-2", "9" * 20]), HEADER_STRINGS),
            ),
            max_size=2,
        ),
    ),
    "POST /v1/responses/{response_id}/cancel": _request(
        "POST /v1/responses/{response_id}/cancel", ["v1", "responses", R, "cancel"]
    ),
    "DELETE /v1/responses/{response_id}": _request(
        "DELETE /v1/responses/{response_id}", ["v1", "responses", R]
    ),
    "GET /v1/responses/{response_id}/input_items": _request(
        "GET /v1/responses/{response_id}/input_items",
        ["v1", "responses", R, "input_items"],
        query=pagination,
    ),
    "POST /v1/conversations": _request(
        "POST /v1/conversations",
        ["v1", "conversations"],
        body=json_body(fields({}, {"metadata": metadata, "items": item_lists})),
    ),
    "GET /v1/conversations/{conversation_id}": _request(
        "GET /v1/conversations/{conversation_id}", ["v1", "conversations", C]
    ),
    "POST /v1/conversations/{conversation_id}": _request(
        "POST /v1/conversations/{conversation_id}",
        ["v1", "conversations", C],
        body=json_body(fields({"metadata": metadata}, {})),
    ),
    "DELETE /v1/conversations/{conversation_id}": _request(
        "DELETE /v1/conversations/{conversation_id}", ["v1", "conversations", C]
    ),
    "POST /v1/conversations/{conversation_id}/items": _request(
        "POST /v1/conversations/{conversation_id}/items",
        ["v1", "conversations", C, "items"],
        body=json_body(fields({"items": item_lists}, {})),
        query=pagination,
    ),
    "GET /v1/conversations/{conversation_id}/items": _request(
        "GET /v1/conversations/{conversation_id}/items", ["v1", "conversations", C, "items"], query=pagination
    ),
    "GET /v1/conversations/{conversation_id}/items/{item_id}": _request(
        "GET /v1/conversations/{conversation_id}/items/{item_id}", ["v1", "conversations", C, "items", ITEM]
    ),
    "DELETE /v1/conversations/{conversation_id}/items/{item_id}": _request(
        "DELETE /v1/conversations/{conversation_id}/items/{item_id}",
        ["v1", "conversations", C, "items", ITEM],
    ),
    "POST /v1/chat/completions": chat_request(),
    "POST /v1/sessions/{conversation_id}/append": _request(
        "POST /v1/sessions/{conversation_id}/append",
        ["v1", "sessions", C, "append"],
        body=json_body(append_body),
        writes=True,
    ),
    "GET /v1/sessions/resolve": _request(
        "GET /v1/sessions/resolve",
        ["v1", "sessions", "resolve"],
        query=st.lists(
            st.tuples(st.sampled_from(["previous_response_id", "conversation_id"]), st.one_of(C, R)),
            max_size=2,
        ),
    ),
    "POST /v1/sessions/{conversation_id}/store_response": _request(
        "POST /v1/sessions/{conversation_id}/store_response",
        ["v1", "sessions", C, "store_response"],
        body=json_body(store_response_body),
        writes=True,
    ),
    "POST /v1/sessions/{conversation_id}/trim": _request(
        "POST /v1/sessions/{conversation_id}/trim",
        ["v1", "sessions", C, "trim"],
        body=json_body(
            fields({}, {"keep_last_turns": st.integers(-2, 9), "max_input_tokens": st.integers(-2, 9999)})
        ),
    ),
    "GET /v1/sessions/{conversation_id}": _request(
        "GET /v1/sessions/{conversation_id}", ["v1", "sessions", C]
    ),
    "DELETE /v1/sessions/{conversation_id}": _request(
        "DELETE /v1/sessions/{conversation_id}", ["v1", "sessions", C]
    ),
}

any_request = weighted(*((1, route) for route in ROUTES.values()))
