"""`POST /v1/responses/compact` through the openai SDK (`client.responses.compact`), on both upstream modes
and both store backends: the recent turns kept, the rest one compaction item whose token only this
sidecar expands — for the tenant it was made for, unaltered — into the summary the engine then gets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import openresponses_types as spec
import orjson
import pytest

from tests.conformance import _validate
from tests.integration.responses_stack import engine_view
from tests.integration.test_input_tokens import POLICY, OpenStack, combos, globex, stack_opener
from tests.unit.test_context_tokens import build_tokenizer


@pytest.fixture
async def open_stack(
    request: pytest.FixtureRequest, make_sidecar: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[OpenStack]:
    async for opener in stack_opener(request, make_sidecar, tmp_path):
        yield opener


def turns(n: int, start: int = 1) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for t in range(start, start + n):
        items += [
            {"role": "user", "content": f"question {t} about the cat"},
            {"role": "assistant", "content": f"answer {t} : it slept"},
        ]
    return items


def check_compaction(body: dict[str, Any]) -> None:
    """The answer is a CompactResource (Open Responses) with exactly one compaction item."""
    _validate(spec.CompactResource, body)
    assert [i["type"] for i in body["output"]].count("compaction") == 1


def compaction_of(output: list[Any]) -> Any:
    (item,) = [i for i in output if i.type == "compaction"]
    return item


@combos
async def test_compact_keeps_the_last_turns_and_the_window_sent_back_reaches_the_engine_as_a_summary(
    open_stack: OpenStack, api: str, store: str
) -> None:
    stack = await open_stack(api, store)
    client = stack.client
    window = [*turns(4), {"role": "user", "content": "question 5 about the cat"}]
    raw = await client.responses.with_raw_response.compact(model="m", input=window, instructions="Be brief.")
    compacted = raw.parse()
    check_compaction(stack.transport.exchanges[-1].json)
    assert compacted.object == "response.compaction"
    window_json = stack.transport.exchanges[-1].json["output"]
    assert raw.headers["X-Compacted-Turns"] == "3"  # keep_last_turns: 2 of the 5 turns
    kept = [(i.role, i.content[0].text) for i in compacted.output if i.type == "message"]
    assert kept == [
        ("user", "question 4 about the cat"),
        ("assistant", "answer 4 : it slept"),
        ("user", "question 5 about the cat"),
    ]
    assert compacted.output[0].type == "compaction"
    token = compaction_of(compacted.output).encrypted_content
    assert "question 1" not in token  # opaque
    assert compacted.usage.input_tokens > 0 and compacted.usage.output_tokens == 0
    # Counted by the model's counter over the whole window compacted, unfolded: at least what create
    # would send for it (which folds by the policy).
    full = await client.responses.input_tokens.count(model="m", input=window, instructions="Be brief.")
    assert compacted.usage.input_tokens >= full.input_tokens
    # Nothing was stored or sent to the engine for a generation.
    assert await stack.engine_bodies() == []

    # The window sent back: the engine gets the summary as summary text, never the token.
    sent_back = window_json  # as the client got it
    response = await client.responses.create(model="m", input=sent_back)
    instructions, history = engine_view(api, (await stack.engine_bodies())[-1])
    assert instructions is not None and instructions.startswith("Summary of turns 1-3:")
    assert "question 1 about the cat" in instructions and "answer 3 : it slept" in instructions
    assert "question 4" not in instructions
    assert history == [
        ("user", "question 4 about the cat"),
        ("assistant", "answer 4 : it slept"),
        ("user", "question 5 about the cat"),
    ]
    assert token not in orjson.dumps((await stack.engine_bodies())[-1]).decode()
    # The stored input keeps the compaction item as sent, with a sidecar id.
    items = await client.responses.input_items.list(response.id, order="asc")
    assert items.data[0].type == "compaction"
    assert items.data[0].encrypted_content == token  # type: ignore[union-attr]
    assert items.data[0].id.startswith("cmp_")
    # A turn chained after it still expands the stored item (the history holds the token).
    await client.responses.create(model="m", input="and then ?", previous_response_id=response.id)
    instructions, _ = engine_view(api, (await stack.engine_bodies())[-1])
    assert instructions is not None and instructions.startswith("Summary of turns 1-3:")
    # input_tokens counts the expanded summary, not the token.
    counted = await client.responses.input_tokens.count(model="m", input=sent_back)
    assert counted.input_tokens < full.input_tokens


@combos
async def test_compact_a_stored_chain_and_compact_again(open_stack: OpenStack, api: str, store: str) -> None:
    stack = await open_stack(api, store)
    client = stack.client
    previous = None
    for n in range(1, 4):
        previous = (
            await client.responses.create(model="m", input=f"question {n} ?", previous_response_id=previous)
        ).id
    assert previous is not None
    compacted = await client.responses.compact(model="m", previous_response_id=previous)
    check_compaction(stack.transport.exchanges[-1].json)
    assert [i.type for i in compacted.output] == ["compaction", "message", "message", "message", "message"]
    # Compacting a compacted window again: one compaction item, the earlier summary carried on.
    window = [*stack.transport.exchanges[-1].json["output"], *turns(2, start=4)]
    await client.responses.compact(model="m", input=window)
    check_compaction(stack.transport.exchanges[-1].json)
    await client.responses.create(model="m", input=stack.transport.exchanges[-1].json["output"])
    instructions, _ = engine_view(api, (await stack.engine_bodies())[-1])
    assert instructions is not None
    assert instructions.index("Summary of turn 1:") < instructions.index("Summary of turns 2-3:")
    # Nothing new to fold and no compaction yet: the window comes back as it was, no compaction item.
    short = await client.responses.compact(model="m", input="just one question")
    assert [i.type for i in short.output] == ["message"]
    # A conversation's items are compacted too.
    conversation = await client.conversations.create(items=turns(3))
    from_conversation = await client.responses.compact(
        model="m", extra_body={"conversation": conversation.id}
    )
    assert from_conversation.output[0].type == "compaction"


def altered(token: str) -> str:
    prefix, body, mac = token.split(".")
    return f"{prefix}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{mac}"


@combos
async def test_forged_altered_or_foreign_tokens_are_a_400_and_nothing_is_stored(
    open_stack: OpenStack, api: str, store: str
) -> None:
    stack = await open_stack(api, store)
    client = stack.client
    compacted = await client.responses.compact(model="m", input=turns(4))
    token = compaction_of(compacted.output).encrypted_content
    stored = await stack.stored_count()
    for bad, who in (
        (altered(token), client),
        ("cs1.e30.AAAA", client),
        ("made up", client),
        (token, globex(stack)),  # another tenant's token
    ):
        window = [{"role": "user", "content": "before"}, {"type": "compaction", "encrypted_content": bad}]
        for call in (who.responses.create, who.responses.input_tokens.count, who.responses.compact):
            with pytest.raises(openai.BadRequestError) as caught:
                await call(model="m", input=window)  # type: ignore[operator]
            assert caught.value.param == "input[1].encrypted_content", caught.value
            assert caught.value.code == "invalid_encrypted_content"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="m", input=[{"type": "compaction"}])  # type: ignore[list-item]
    assert caught.value.param == "input[0].encrypted_content"
    assert await stack.engine_bodies() == []
    assert await stack.stored_count() == stored


@combos
async def test_compact_refuses_what_create_refuses(open_stack: OpenStack, api: str, store: str) -> None:
    stack = await open_stack(api, store)
    client = stack.client
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.compact(model="m", previous_response_id="resp_nope")
    assert caught.value.code == "previous_response_not_found"
    response = await client.responses.create(model="m", input="secret")
    with pytest.raises(openai.BadRequestError) as caught:
        await globex(stack).responses.compact(model="m", previous_response_id=response.id)
    assert caught.value.code == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.compact(model="m", input="x", extra_headers={"X-Prompt-Pack": "sales"})
    assert caught.value.param == "X-Prompt-Pack"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.compact(model="m")
    assert caught.value.param == "input"


async def test_without_a_policy_key_the_replicas_on_one_store_share_one(
    open_stack: OpenStack, tmp_path: Path
) -> None:
    """Compaction works out of the box: with no key in the policy file, the key is a secret the store keeps
    for every replica on it. Another store's sidecar, or one with a policy key, refuses its tokens."""
    no_key = "tenants: {acme: {api_keys: [sk-acme]}}\n"
    first = await open_stack("responses", "redis", policy=no_key)
    second = await open_stack("responses", "redis", policy=no_key)  # another replica on the same Redis
    token = compaction_of((await first.client.responses.compact(model="m", input=turns(3))).output)
    sent = [
        {"type": "compaction", "encrypted_content": token.encrypted_content},
        {"role": "user", "content": "go"},
    ]
    answer = await second.client.responses.create(model="m", input=sent)  # type: ignore[arg-type]
    assert answer.status == "completed"
    elsewhere = await open_stack("responses", "memory", policy=no_key)
    keyed = await open_stack("responses", "memory", policy=no_key + "compaction: {key: " + "o" * 40 + "}\n")
    for other in (elsewhere, keyed):
        with pytest.raises(openai.BadRequestError) as caught:
            await other.client.responses.create(model="m", input=sent)  # type: ignore[arg-type]
        assert caught.value.code == "invalid_encrypted_content"
        assert caught.value.param == "input[0].encrypted_content"


@combos
async def test_forged_items_are_refused_before_they_are_stored_on_every_write_route(
    open_stack: OpenStack, api: str, store: str
) -> None:
    stack = await open_stack(api, store)
    client = stack.client
    forged = {"type": "compaction", "encrypted_content": "cs1.e30.AAAA"}
    conversation = await client.conversations.create()
    stored = await stack.stored_count()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.conversations.create(items=[forged])  # type: ignore[list-item]
    assert caught.value.param == "items[0].encrypted_content"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.conversations.items.create(
            conversation.id,
            items=[{"role": "user", "content": "hi"}, forged],  # type: ignore[list-item]
        )
    assert caught.value.param == "items[1].encrypted_content"
    sessions = stack.sidecar
    headers = {"Authorization": "Bearer sk-acme"}
    for path, body, param in (
        ("append", {"items": [forged]}, "items[0].encrypted_content"),
        ("store_response", {"output": [forged]}, "output[0].encrypted_content"),
    ):
        resp = await sessions.post(f"/v1/sessions/conv-s/{path}", json=body, headers=headers)
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["param"] == param
    assert await stack.stored_count() == stored  # nothing written: the conversation stays usable
    # A token this sidecar signed for this tenant is stored, and expanded when the history is sent.
    token = compaction_of((await client.responses.compact(model="m", input=turns(3))).output)
    valid = {"type": "compaction", "encrypted_content": token.encrypted_content}
    resp = await sessions.post("/v1/sessions/conv-s/append", json={"items": [valid]}, headers=headers)
    assert resp.status == 200, await resp.text()
    answer = await client.responses.create(model="m", input="hi", extra_body={"conversation": "conv-s"})
    assert answer.status == "completed"
    assert any("question 1 about the cat" in str(body) for body in await stack.engine_bodies())


async def test_a_stored_item_signed_with_a_replaced_key_is_refused_naming_how_the_history_was_named(
    open_stack: OpenStack, tmp_path: Path
) -> None:
    first = await open_stack("responses", "redis")
    token = compaction_of((await first.client.responses.compact(model="m", input=turns(3))).output)
    item = {"type": "compaction", "encrypted_content": token.encrypted_content}
    conversation = await first.client.conversations.create(items=[item])  # type: ignore[list-item]
    chained = await first.client.responses.create(model="m", input="hi", conversation=conversation.id)
    # The same Redis behind a sidecar whose policy file now holds another key.
    tokenizer = build_tokenizer(tmp_path / "tokenizer.json")
    rotated = await open_stack("responses", "redis", policy=POLICY.format(tokenizer=tokenizer, key="r" * 40))
    client = rotated.client
    for call in (client.responses.create, client.responses.input_tokens.count, client.responses.compact):
        for named, param in (
            ({"conversation": conversation.id}, "conversation"),
            ({"previous_response_id": chained.id}, "previous_response_id"),
        ):
            with pytest.raises(openai.BadRequestError) as caught:
                await call(model="m", input="hi", extra_body=named)  # type: ignore[operator]
            assert caught.value.code == "invalid_encrypted_content"
            assert caught.value.param == param
            assert "stored item 'cmp_" in caught.value.message
    headers = {"Authorization": "Bearer sk-acme"}
    for query, param in (
        (f"conversation_id={conversation.id}", "conversation_id"),
        (f"previous_response_id={chained.id}", "previous_response_id"),
    ):
        resp = await rotated.sidecar.get(f"/v1/sessions/resolve?{query}", headers=headers)
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["param"] == param
    for header in ("X-Conversation-Id", "X-Previous-Response-Id"):
        value = conversation.id if header == "X-Conversation-Id" else chained.id
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        resp = await rotated.sidecar.post(
            "/v1/chat/completions", json=body, headers={**headers, header: value}
        )
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["param"] == header
    assert await rotated.engine_bodies() == []
