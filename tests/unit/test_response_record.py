"""Stored response records are small and rebuild the exact response object."""

from __future__ import annotations

from sidecar.response_record import compact_record, resource_from_record, stored_fingerprint
from sidecar.wire.resource import build_response_resource
from tests.conformance import assert_response_resource


def resource(**overrides: object) -> dict[str, object]:
    base = build_response_resource(
        response_id="resp_x",
        created_at=1_700_000_000,
        status="completed",
        model="m",
        output=[],
        request={"model": "m", "temperature": 0.2, "metadata": {"k": "v"}, "instructions": "be brief"},
        usage={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_tokens_details": {"cached_tokens": 7},
        },
        completed_at=1_700_000_001,
        previous_response_id="resp_parent",
    )
    return {**base, **overrides}


def test_record_round_trips_to_the_same_resource() -> None:
    original = resource()
    output = [
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}],
        }
    ]
    rebuilt = resource_from_record("resp_x", compact_record(original), output)
    assert rebuilt == {**original, "output": output}
    assert_response_resource(rebuilt)


def test_record_holds_only_what_differs_from_defaults() -> None:
    record = compact_record(resource())
    assert b'"tools"' not in record and b'"truncation"' not in record and b'"output"' not in record
    assert b'"u":[10,5,7,0]' in record
    assert len(record) < 200


def test_unusual_usage_is_kept_whole() -> None:
    odd = resource(
        usage={
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    )
    assert resource_from_record("resp_x", compact_record(odd), [])["usage"]["total_tokens"] == 5


def test_the_prefix_fingerprint_is_kept_beside_the_response_not_in_it() -> None:
    original = resource()
    record = compact_record(original, "0123abcd")
    assert stored_fingerprint(record) == "0123abcd"
    assert resource_from_record("resp_x", record, []) == {**original, "output": []}
    assert stored_fingerprint(compact_record(original)) is None  # as records stored before kept one
