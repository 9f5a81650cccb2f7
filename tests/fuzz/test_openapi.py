"""`GET /convostore/openapi.json`: public, OpenAPI 3.1, every route of the router documented, and the
request schemas accept what the routes accept (the fuzz suite checks every accepted body as well)."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema_rs import Draft202012Validator, meta

from sidecar.api_schema import OPERATIONS
from sidecar.app import create_app
from sidecar.config import Config
from sidecar.handlers.openapi import build_document

# Bodies as the integration tests and the README send them (tests/integration/test_session_api.py,
# test_conversations_chat.py, test_responses_proxy.py), each accepted by its route.
ACCEPTED_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("POST /v1/sessions/{conversation_id}/append", {"role": "user", "content": "Hi\r\nthere"}),
    ("POST /v1/sessions/{conversation_id}/append", {"messages": [{"role": "user", "content": "x"}]}),
    (
        "POST /v1/sessions/{conversation_id}/append",
        {"items": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}]},
    ),
    (
        "POST /v1/sessions/{conversation_id}/append",
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
            "previous_response_id": "resp_x",
        },
    ),
    (
        "POST /v1/sessions/{conversation_id}/store_response",
        {
            "response": {
                "object": "chat.completion",
                "model": "m",
                "choices": [{"message": {"role": "assistant", "content": "Hello!"}}],
            }
        },
    ),
    (
        "POST /v1/sessions/{conversation_id}/store_response",
        {"output": [{"type": "message", "role": "assistant", "content": "Hi"}]},
    ),
    (
        "POST /v1/sessions/{conversation_id}/store_response",
        {"message": {"role": "assistant", "content": "x"}},
    ),
    (
        "POST /v1/sessions/{conversation_id}/store_response",
        {"output": [{"type": "message", "role": "assistant", "content": "Hi"}], "response_id": "gw-42"},
    ),
    ("POST /v1/sessions/{conversation_id}/trim", {"keep_last_turns": 2, "max_input_tokens": 100}),
    ("POST /v1/sessions/{conversation_id}/trim", {}),
    ("POST /v1/conversations", {}),
    ("POST /v1/conversations", {"metadata": {"topic": "demo"}, "items": [{"role": "user", "content": "hi"}]}),
    ("POST /v1/conversations/{conversation_id}", {"metadata": {"k": "v"}}),
    ("POST /v1/conversations/{conversation_id}/items", {"items": [{"role": "user", "content": "x"}]}),
    ("POST /v1/responses", {"model": "m", "input": "Hello", "store": True, "stream": False}),
    (
        "POST /v1/responses",
        {
            "model": "m",
            "input": [{"type": "function_call_output", "call_id": "c", "output": "42"}],
            "previous_response_id": "resp_1",
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
            "include": ["reasoning.encrypted_content"],
        },
    ),
    (
        "POST /v1/responses",
        {"model": "m", "input": "x", "conversation": {"id": "c1"}, "metadata": {"a": "b"}},
    ),
    ("POST /v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}),
]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(create_app(Config.from_env({})).router)


def test_every_route_of_the_router_is_documented(document: dict[str, Any]) -> None:
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    undocumented = [
        f"{m.upper()} {p}"
        for p, ops in document["paths"].items()
        for m, o in ops.items()
        if o.get("x-undocumented")
    ]
    assert not undocumented, f"document these routes in sidecar/api_schema.py OPERATIONS: {undocumented}"
    assert documented <= set(OPERATIONS)


def test_the_document_is_openapi_3_1_with_valid_schemas(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("x-undocumented"):
                continue  # test_every_route_of_the_router_is_documented names it
            assert set(operation["responses"]) >= {"200", "default"}, (method, path)
            schemas = [c["schema"] for r in operation["responses"].values() for c in r["content"].values()]
            schemas += [p["schema"] for p in operation.get("parameters", [])]
            if "requestBody" in operation:
                schemas.append(operation["requestBody"]["content"]["application/json"]["schema"])
            for schema in schemas:
                if "$ref" not in schema:
                    meta.validate(schema)
    meta.validate(document["components"]["schemas"]["Error"])


@pytest.mark.parametrize(("route", "body"), ACCEPTED_BODIES)
def test_the_request_schema_accepts_what_the_tests_send(route: str, body: dict[str, Any]) -> None:
    method, path = route.split(" ", 1)
    schema = OPERATIONS[(method, path)].body
    assert schema is not None
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(body)]
    assert not errors, errors


async def test_openapi_json_is_served_without_authentication(make_sidecar: Any) -> None:
    client = await make_sidecar(redis_url="memory://", auth="trusted_header")
    async with client.get("/convostore/openapi.json") as response:
        assert response.status == 200
        served = await response.json()
    assert "/v1/sessions/{conversation_id}/append" in served["paths"]
    async with client.get("/v1/sessions/c1") as response:
        assert response.status == 401  # the routes it documents still are not public
