"""A response as stored: only what differs from the defaults, output kept as items, rebuilt on read."""

from __future__ import annotations

from typing import Any

import orjson

from .wire.resource import build_response_resource, normalise_usage

# What a response with nothing set looks like; stored records hold only the fields that differ, so a turn's
# Redis footprint is its items plus a few dozen bytes rather than a whole response object.
_DEFAULTS: dict[str, Any] = build_response_resource(
    response_id="", created_at=0, status="completed", model="", output=[], request={}
)
# Usage is stored as [input, output, cached, reasoning] when its total is their sum (it always is in
# practice); the detail objects are rebuilt on read.
_USAGE = "usage"
_PACKED_USAGE = "u"
# Not a response field: the X-Prefix-Fingerprint the turn was answered with, which a replay reports again
# (its prompt's summary block cannot be rebuilt without resolving the history a second time).
_FINGERPRINT = "f"


def compact_record(resource: dict[str, Any], fingerprint: str = "") -> bytes:
    record = {k: v for k, v in resource.items() if k not in ("id", "output") and _DEFAULTS.get(k, ...) != v}
    if fingerprint:
        record[_FINGERPRINT] = fingerprint
    usage = record.get(_USAGE)
    if isinstance(usage, dict):
        packed = [
            usage.get("input_tokens", 0),
            usage.get("output_tokens", 0),
            (usage.get("input_tokens_details") or {}).get("cached_tokens", 0),
            (usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0),
        ]
        written = (usage.get("input_tokens_details") or {}).get("cache_write_tokens", 0)
        if usage.get("total_tokens") == packed[0] + packed[1] and set(usage) <= _USAGE_FIELDS and not written:
            del record[_USAGE]
            record[_PACKED_USAGE] = packed
    return orjson.dumps(record)


_USAGE_FIELDS = frozenset(
    {"input_tokens", "output_tokens", "total_tokens", "input_tokens_details", "output_tokens_details"}
)


def resource_from_record(response_id: str, record: bytes, output: list[dict[str, Any]]) -> dict[str, Any]:
    stored = orjson.loads(record) if record else {}
    stored.pop(_FINGERPRINT, None)
    packed = stored.pop(_PACKED_USAGE, None)
    if packed is not None:
        input_tokens, output_tokens, cached, reasoning = packed
        stored[_USAGE] = normalise_usage(
            {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens_details": {"reasoning_tokens": reasoning},
            }
        )
    return {**_DEFAULTS, **stored, "id": response_id, "output": output}


def stored_fingerprint(record: bytes) -> str | None:
    """The prefix fingerprint kept with a turn's record; None for records stored before they kept one."""
    fingerprint = orjson.loads(record).get(_FINGERPRINT) if record else None
    return fingerprint if isinstance(fingerprint, str) else None
