"""Stored responses: `GET`/`DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`."""

from __future__ import annotations

import orjson
from aiohttp import web

from ..appkeys import STORE
from ..errors import response_not_found
from ..middleware import TENANT
from ..response_record import resource_from_record
from ..stored_items import decode_items
from .common import json_response
from .pagination import page_items

routes = web.RouteTableDef()


@routes.get("/v1/responses/{response_id}")
async def get_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    history = await request.app[STORE].resolve_response(request[TENANT], response_id, "output")
    if history is None:
        raise response_not_found(response_id)
    resource = resource_from_record(response_id, history.body, decode_items(history.items))
    return json_response(orjson.dumps(resource))


@routes.delete("/v1/responses/{response_id}")
async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    if not await request.app[STORE].delete_response(request[TENANT], response_id):
        raise response_not_found(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


@routes.get("/v1/responses/{response_id}/input_items")
async def input_items(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    history = await request.app[STORE].resolve_response(request[TENANT], response_id, "input")
    if history is None:
        raise response_not_found(response_id)
    return json_response(page_items(decode_items(history.items), request.query))
