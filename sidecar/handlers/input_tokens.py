"""`POST /v1/responses/input_tokens`: a create body in, the input tokens of exactly the prompt that create
would send out (pack, folds, summaries, compactions, instructions, tools), nothing reserved or written."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from ..appkeys import CONTEXT, STORE, UPSTREAM
from ..context.packs import PACK_HEADER
from ..context.policy import WindowPolicy
from ..context.prompt import Prompt
from ..context.tokens import ENGINE, ESTIMATE, TOKENIZER
from ..middleware import TENANT
from ..turns import TurnPlan, plan_turn
from ..upstream import Upstream
from ..wire.chat_translate import responses_to_chat_request
from .common import json_response, read_json
from .responses_request import CreateRequest, parse_create, prompt_inputs

routes = web.RouteTableDef()

# Which counter made the number: "tokenizer" (the policy file's tokenizer.json for the model), "engine"
# (its /tokenize) or "estimate" (≈4 bytes a token, when neither can count).
TOKEN_SOURCE_HEADER = "X-Token-Count-Source"


@routes.post("/v1/responses/input_tokens")
async def count_input_tokens(request: web.Request) -> web.Response:
    _, body = await read_json(request)
    create = parse_create(body)
    plan = await plan_window(request, create)
    prompt, tokens, source = await counted_window(request, create, plan)
    headers = {
        "X-Prefix-Fingerprint": prompt.fingerprint,
        "X-Estimated-Input-Tokens": str(tokens),
        TOKEN_SOURCE_HEADER: source,
    }
    return json_response({"object": "response.input_tokens", "input_tokens": tokens}, headers)


async def plan_window(request: web.Request, create: CreateRequest) -> TurnPlan:
    """The history a create call would continue, read-only: an unknown pack is a 400 and an unknown
    `previous_response_id` or `conversation` refused as create refuses them, with no id reserved, no
    idempotency key claimed and nothing written."""
    request.app[CONTEXT].choose(create.model, request.headers.get(PACK_HEADER))
    return await plan_turn(
        request.app[STORE],
        request[TENANT],
        previous_response_id=create.previous_response_id,
        conversation_id=create.conversation_id,
        idempotency_key=None,
        new_items=create.items,
        will_store=False,
    )


async def counted_window(
    request: web.Request, create: CreateRequest, plan: TurnPlan, policy_override: WindowPolicy | None = None
) -> tuple[Prompt, int, str]:
    """The prompt create's turn_prompt builds for this plan, its input tokens and which counter made them
    (TOKEN_SOURCE_HEADER); context_length_exceeded as create. The model's tokenizer.json counts if it has
    one; else the engine counts the whole prompt through its own chat template (the markup around each
    message differs a lot between templates: ChatML on Gemma's vocabulary costs ~10 tokens a message).
    Items are counted one by one (a /tokenize round trip per new item) only where that count decides
    something: a budget folding by it, or an engine with no template count."""
    prompt = await _window_prompt(request, create, plan, policy_override, exact=False)
    if prompt.token_source == TOKENIZER:
        return prompt, prompt.input_tokens, TOKENIZER
    chat = responses_to_chat_request(
        {**prompt.engine_fields(create.body), "stream": False}, prompt.chat_messages()
    )
    templated = await _templated_count(request.app[UPSTREAM], chat)
    if templated is not None:
        return prompt, templated, ENGINE
    if prompt.token_source == ESTIMATE:  # no budget needed the engine's counts: ask for them now
        prompt = await _window_prompt(request, create, plan, policy_override, exact=True)
    return prompt, prompt.input_tokens, prompt.token_source


async def _window_prompt(
    request: web.Request,
    create: CreateRequest,
    plan: TurnPlan,
    policy_override: WindowPolicy | None,
    *,
    exact: bool,
) -> Prompt:
    return await request.app[CONTEXT].prompt(
        **prompt_inputs(request, create, plan),
        exact=exact,
        policy_override=policy_override,
        # An upstream/http policy folds with the summaries already stored, as create would; none is written.
        conversation_id=plan.conversation_id,
        writable=False,
    )


TEMPLATE_TIMEOUT = aiohttp.ClientTimeout(total=10.0)


async def _templated_count(upstream: Upstream, chat: dict[str, Any]) -> int | None:
    """llama.cpp: /apply-template, then /tokenize of its text with the special tokens; vLLM: /tokenize of
    the messages. None when the engine offers neither."""
    fields: dict[str, Any] = {k: chat[k] for k in ("messages", "tools") if k in chat}
    rendered = await upstream.ask("/apply-template", fields, TEMPLATE_TIMEOUT)
    if isinstance(rendered, dict) and isinstance(rendered.get("prompt"), str):
        body = {"content": rendered["prompt"], "add_special": True, "parse_special": True}
        tokens = await upstream.ask("/tokenize", body, TEMPLATE_TIMEOUT)
        if isinstance(tokens, dict) and isinstance(tokens.get("tokens"), list):
            return len(tokens["tokens"])
        return None
    body = {**fields, "model": chat.get("model"), "add_generation_prompt": True}
    counted = await upstream.ask("/tokenize", body, TEMPLATE_TIMEOUT)
    if isinstance(counted, dict) and isinstance(counted.get("count"), int):
        return int(counted["count"])
    return None
