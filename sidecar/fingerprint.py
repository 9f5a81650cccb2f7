"""The prefix fingerprint: a stable hash of what comes first in every prompt (docs/api.md §6)."""

from __future__ import annotations

import hashlib

EMPTY_TOOLS = b"[]"


def prefix_fingerprint(pack: bytes = b"", tools: bytes = EMPTY_TOOLS, summary: bytes = b"") -> str:
    """Hex hash of pack, tools and summary block; changes only when one of them does."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (pack, tools, summary):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def estimate_tokens(n_bytes: int) -> int:
    """A rough count (≈4 bytes a token) until a tokenizer is configured; callers say it is an estimate."""
    return (n_bytes + 3) // 4
