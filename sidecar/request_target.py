"""The request target as the client sent it, checked before routing and before it is forwarded."""

from __future__ import annotations

import re
from urllib.parse import unquote

from .errors import MalformedRequestTarget

# Encoded '/' and '\' would be path separators to some engines and not to others (or to our router).
_ENCODED_SEPARATORS = ("%2f", "%5c")
# Controls, space, DEL, '#' and anything past ASCII: one regex search instead of a loop per character.
_NOT_IN_A_PATH = re.compile(r"[^\x21-\x7e]|#")


def check_request_target(target: str) -> None:
    """Refuse a target that the sidecar and the engine could read as different paths: dot segments
    (`.`, `..`, also percent-encoded), encoded slashes, backslashes, fragments and absolute or authority
    form. What passes is forwarded byte for byte, so the engine sees the path the router saw.
    """
    if not target.startswith("/"):
        raise MalformedRequestTarget("The request target must be an absolute path (origin form).")
    if _NOT_IN_A_PATH.search(target):
        raise MalformedRequestTarget("The request target holds characters a URL path may not hold.")
    path = target.partition("?")[0]
    lowered = path.lower()
    if "\\" in path or any(sep in lowered for sep in _ENCODED_SEPARATORS):
        raise MalformedRequestTarget("The request path must not hold backslashes or encoded slashes.")
    if "." in path or "%2e" in lowered:
        for segment in path.split("/"):
            if unquote(segment) in (".", ".."):
                raise MalformedRequestTarget("The request path must not hold '.' or '..' segments.")
