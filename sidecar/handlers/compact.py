"""`POST /v1/responses/compact`: a window (`input` and/or `previous_response_id` or `conversation`) in, a
`response.compaction` out whose `output` keeps the recent turns verbatim and replaces the rest by one
`compaction` item (context/compaction.py). Stateless: nothing is reserved or written."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from ..appkeys import CONTEXT
from ..context.compaction import compact_window, not_configured
from ..context.packs import PACK_HEADER
from ..context.policy import WindowPolicy
from ..wire.resource import complete_output_item
from .common import json_response, read_json
from .input_tokens import TOKEN_SOURCE_HEADER, counted_window, plan_window
from .responses_request import parse_create

routes = web.RouteTableDef()

# Counting the window compacted: every item, as create would send it before any fold or budget.
_UNTRIMMED = WindowPolicy()


@routes.post("/v1/responses/compact")
async def compact_response(request: web.Request) -> web.Response:
    _, body = await read_json(request)
    create = parse_create(body)
    context = request.app[CONTEXT]
    if not context.compaction.configured:  # before any read: a token could not be checked anywhere else
        raise not_configured(None)
    await context.compaction.ready()
    plan = await plan_window(request, create)
    _, policy = context.choose(create.model, request.headers.get(PACK_HEADER))
    items: list[dict[str, Any]] = [orjson.loads(raw) for raw in plan.history]
    items += [orjson.loads(raw) for _, raw in plan.input_items]
    compacted = compact_window(
        context.compaction,
        plan.tenant,
        create.model,
        items,
        first_input=len(plan.history),
        keep_last_turns=policy.keep_last_turns,
        mint=plan.mint,
        history_param=create.history_param,
    )
    # usage: what the window compacted costs as input; the template summariser makes no model call.
    _, tokens, source = await counted_window(request, create, plan, policy_override=_UNTRIMMED)
    resource = {
        "id": plan.mint("cmp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [complete_output_item(item) for item in compacted.output],
        "usage": {
            "input_tokens": tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens,
        },
    }
    headers = {"X-Compacted-Turns": str(compacted.folded_turns), TOKEN_SOURCE_HEADER: source}
    return json_response(resource, headers)
