"""An engine's error answer as the client's OpenAI error: its message, param and code, typed as OpenAI's."""

from __future__ import annotations

import orjson

from sidecar.errors import InvalidRequest, UpstreamError, engine_rejected


def test_an_engines_4xx_keeps_its_status_message_param_and_code() -> None:
    body = {"error": {"message": "bad tools", "type": "invalid_request_error", "param": "tools", "code": "x"}}
    rejected = engine_rejected(422, orjson.dumps(body))
    assert isinstance(rejected, InvalidRequest) and rejected.status == 422
    assert orjson.loads(rejected.body_bytes())["error"] == {
        "message": "bad tools",
        "type": "invalid_request_error",
        "param": "tools",
        "code": "x",
    }


def test_a_numeric_code_as_llamacpp_sends_it_becomes_null() -> None:
    # llama.cpp's error body: {"error": {"code": 400, "message": ..., "type": ...}}; OpenAI's code is a string
    body = {"error": {"code": 400, "message": "the prompt is too long", "type": "invalid_request_error"}}
    error = orjson.loads(engine_rejected(400, orjson.dumps(body)).body_bytes())["error"]
    assert error == {
        "message": "the prompt is too long",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_an_engines_5xx_is_a_502_naming_its_status() -> None:
    failed = engine_rejected(503, b'{"error": {"message": "loading model", "code": 503}}')
    assert isinstance(failed, UpstreamError) and failed.status == 502
    assert failed.message == "The engine answered 503: loading model"
