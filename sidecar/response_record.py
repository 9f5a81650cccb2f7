"""A response as stored: only what differs from the defaults, output kept as items, rebuilt on read."""

from __future__ import annotations

from typing import Any

import orjson

from .wire.resource import build_response_resource

# What a response with nothing set looks like; stored records hold only the fields that differ, so a turn's
# Redis footprint is its items plus a few dozen bytes rather than a whole response object.
_DEFAULTS: dict[str, Any] = build_response_resource(
    response_id="", created_at=0, status="completed", model="", output=[], request={}
)


def compact_record(resource: dict[str, Any]) -> bytes:
    record = {k: v for k, v in resource.items() if k not in ("id", "output") and _DEFAULTS.get(k, ...) != v}
    return orjson.dumps(record)


def resource_from_record(response_id: str, record: bytes, output: list[dict[str, Any]]) -> dict[str, Any]:
    stored = orjson.loads(record) if record else {}
    return {**_DEFAULTS, **stored, "id": response_id, "output": output}
