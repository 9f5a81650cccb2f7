"""`GET /convostore/openapi.json`: an OpenAPI 3.1 document of the routes this app serves, built from its
router and the schemas in api_schema.py (a route added without documentation shows up as `x-undocumented`)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from ..api_schema import OPERATIONS, PATH_PARAMETERS, Operation
from ..api_shapes import ERROR, STRING, Schema
from .common import json_response

routes = web.RouteTableDef()

# The engine's catch-all pass-through is not the sidecar's route; HEAD mirrors GET.
_NOT_DOCUMENTED = ("/{tail}",)
_PATH_PARAMETER = re.compile(r"{([^}]+)}")
_ERROR_RESPONSE = {
    "description": "An OpenAI error (400 bad request, 401, 404, 409 conflict, 413, 429, 503 store down, "
    "...); a request line or header over 8 KiB is refused by the HTTP layer before routing, in plain text",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
        "text/plain": {"schema": STRING},
    },
}


@routes.get("/convostore/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return json_response(build_document(request.app.router))


def build_document(router: web.UrlDispatcher) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*") or resource.canonical in _NOT_DOCUMENTED:
            continue
        path = resource.canonical
        documented = OPERATIONS.get((route.method, path))
        paths.setdefault(path, {})[route.method.lower()] = (
            _operation(route.method, path, documented)
            if documented is not None
            else {"x-undocumented": True, "responses": {"default": _ERROR_RESPONSE}}
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ConvoStore",
            "version": _version(),
            "description": "The sidecar's own routes: the session API, stored Responses objects, the "
            "Conversations API, stateful chat and its operations endpoints. Every other path is the "
            "engine's, passed through.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": {"Error": ERROR}},
    }


def _operation(method: str, path: str, operation: Operation) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS.get(name, STRING)}
        for name in _PATH_PARAMETER.findall(path)
    ]
    parameters += [{"name": n, "in": "query", "schema": s} for n, s in operation.query.items()]
    parameters += [{"name": n, "in": "header", "schema": s} for n, s in operation.headers.items()]
    document: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": operation.summary,
        "tags": list(operation.tags),
        "responses": _responses(operation),
    }
    if parameters:
        document["parameters"] = parameters
    if operation.body is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": operation.body}},
        }
    return document


def _responses(operation: Operation) -> dict[str, Any]:
    ok: dict[str, Schema] = {}
    if operation.answer is not None:
        ok[operation.content_type] = {"schema": operation.answer}
    else:
        ok[operation.content_type] = {"schema": STRING}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": ok}}
    for key, schema in operation.other_answers.items():
        status, _, content_type = key.partition(" ")
        answer = responses.setdefault(status, {"description": "See the summary", "content": {}})
        answer["content"][content_type or "application/json"] = {"schema": schema}
    responses["default"] = _ERROR_RESPONSE
    return responses


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.strip("/").replace(".", "_").split("/")]
    return "_".join([method.lower(), *words])


def _version() -> str:
    try:
        return version("convostore")
    except PackageNotFoundError:
        return "0"
