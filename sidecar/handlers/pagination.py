"""OpenAI list pages over stored items: `limit`, `order`, `after` -> `data`, `first_id`, `has_more`, ..."""

from __future__ import annotations

import re
from typing import Any

from ..api_limits import PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, PAGE_LIMIT_MIN
from ..errors import InvalidRequest

_LIMIT = re.compile(r"[0-9]{1,9}")


def page_items(items: list[dict[str, Any]], query: Any, *, default_order: str = "desc") -> dict[str, Any]:
    limit_text = query.get("limit", str(PAGE_LIMIT_DEFAULT))
    # ASCII digits only (str.isdigit also takes '²', which int() refuses), and not 5,000 of them.
    if not _LIMIT.fullmatch(limit_text) or not PAGE_LIMIT_MIN <= int(limit_text) <= PAGE_LIMIT_MAX:
        expected = f"an integer between {PAGE_LIMIT_MIN} and {PAGE_LIMIT_MAX}"
        raise InvalidRequest(f"Invalid 'limit': expected {expected}.", param="limit")
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [i.get("id") for i in ordered]
        if after not in ids:
            raise InvalidRequest(f"Invalid 'after': no item with id '{after}'.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[: int(limit_text)]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > len(data),
    }
