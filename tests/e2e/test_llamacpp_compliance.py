"""The Open Responses compliance cases the model can do, on real llama.cpp through the sidecar.

llama.cpp's own /v1/responses passes none of them (no sequence numbers or output indexes, stub response
objects); through the sidecar every object and event validates. Image input and tool calling are left out:
Gemma 3 270M reads no images and its chat template has no tools (the fake-engine suite covers both).
Prompts are ones this model answers before its stop string (with some it stops at once, output empty)."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest

from tests.conformance import assert_event_sequence, assert_response_resource
from tests.fixtures.sidecar_process import SidecarProcess
from tests.integration.responses_stack import parse_sse
from tests.integration.test_open_responses_compliance import CASES as COMPLIANCE_CASES

pytestmark = pytest.mark.slow

LIMITS = {"max_output_tokens": 16, "temperature": 0, "stop": ["<|im_end|>"]}
MODEL_CAN_DO = ("basic-response", "streaming-response", "system-prompt", "multi-turn")
CASES: dict[str, dict[str, Any]] = {name: COMPLIANCE_CASES[name] for name in MODEL_CAN_DO}
# "Count 1 to 5." makes this model stop at once (empty output): the same stream case, a prompt it answers.
CASES["streaming-response"] = {
    **CASES["streaming-response"],
    "input": [{"type": "message", "role": "user", "content": "Say hello."}],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_compliance_case_on_llamacpp(sidecar: SidecarProcess, case: str) -> None:
    body = {"model": "gemma", **LIMITS, **CASES[case]}
    response = httpx.post(f"{sidecar.url}/v1/responses", json=body, timeout=120)
    assert response.status_code == 200, response.text
    if body.get("stream"):
        events = parse_sse(response.content)
        assert_event_sequence(events)
        final = events[-1]["response"]
    else:
        final = response.json()
    assert_response_resource(final)
    assert final["status"] in ("completed", "incomplete")
    assert [item["type"] for item in final["output"]] == ["message"]
    assert final["usage"]["input_tokens"] > 0
