"""What the stream translator tests share: a predictable id minter and the sidecar's response skeleton."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from sidecar.wire.resource import build_response_resource

Event = dict[str, Any]


def minter() -> Callable[[str], str]:
    counter = itertools.count()
    return lambda prefix: f"{prefix}_sc{next(counter):04d}"


def base(**request: Any) -> Event:
    return build_response_resource(
        response_id="resp_sidecar",
        created_at=1700000000,
        status="in_progress",
        model="gemma",
        output=[],
        request={"model": "gemma", **request},
    )
