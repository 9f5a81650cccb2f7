"""`POST /v1/responses/input_tokens`: a create body in, the input tokens of exactly the prompt that create
would send out (pack, folds, summaries, compactions, instructions, tools), nothing reserved or written."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import CONTEXT, STORE, UPSTREAM
from ..context.packs import PACK_HEADER
from ..context.policy import WindowPolicy
from ..context.prompt import Prompt
from ..middleware import TENANT
from ..turns import TurnPlan, plan_turn
from .common import json_response, read_json
from .responses_request import CreateRequest, parse_create

routes = web.RouteTableDef()

# Which counter made the number: "tokenizer" (the policy file's tokenizer.json for the model), "engine"
# (its /tokenize) or "estimate" (≈4 bytes a token, when neither can count).
TOKEN_SOURCE_HEADER = "X-Token-Count-Source"


@routes.post("/v1/responses/input_tokens")
async def count_input_tokens(request: web.Request) -> web.Response:
    _, body = await read_json(request)
    create = parse_create(body)
    plan = await plan_window(request, create)
    prompt = await window_prompt(request, create, plan)
    headers = {
        "X-Prefix-Fingerprint": prompt.fingerprint,
        "X-Estimated-Input-Tokens": str(prompt.input_tokens),
        TOKEN_SOURCE_HEADER: prompt.token_source,
    }
    return json_response({"object": "response.input_tokens", "input_tokens": prompt.input_tokens}, headers)


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


async def window_prompt(
    request: web.Request, create: CreateRequest, plan: TurnPlan, policy_override: WindowPolicy | None = None
) -> Prompt:
    """The prompt create's turn_prompt builds for this plan, counted by the model's best counter (its
    tokenizer.json, else the engine's /tokenize, else the estimate); context_length_exceeded as create."""
    return await request.app[CONTEXT].prompt(
        model=create.model,
        pack_header=request.headers.get(PACK_HEADER),
        upstream=request.app[UPSTREAM],
        history=plan.history,
        new_input=[b for _, b in plan.input_items],
        instructions=create.body.get("instructions"),
        request_tools=create.body.get("tools"),
        truncation=create.truncation,
        tenant=plan.tenant,
        exact=True,
        policy_override=policy_override,
    )
