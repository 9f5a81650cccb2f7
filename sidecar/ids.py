"""Id minting and parsing: every id minted inside a conversation carries the conversation's slot tag."""

from __future__ import annotations

import hashlib
import os
import re

from .errors import InvalidRequest

TAG_LEN = 8
_RANDOM_BYTES = 10  # 80 random bits after the slot tag: short ids, since each is stored per item
# Client-chosen ids become part of Redis keys: no ':' (our separator) and no braces (hash-tag syntax).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_MINTED = re.compile(rf"^(resp|msg|fc|fco|rs|item|cmp)_([0-9a-f]{{{TAG_LEN}}})[0-9a-f]{{8,64}}$")


def conversation_tag(tenant: str, conversation_id: str) -> str:
    """Short stable hash naming the Redis Cluster slot of a conversation (tenant-scoped)."""
    digest = hashlib.blake2b(f"{tenant}\x00{conversation_id}".encode(), digest_size=TAG_LEN // 2)
    return digest.hexdigest()


def mint_in_conversation(prefix: str, tag: str) -> str:
    return f"{prefix}_{tag}{os.urandom(_RANDOM_BYTES).hex()}"


def mint_conversation_id() -> str:
    return f"conv_{os.urandom(12).hex()}"


def conversation_id_for_idempotency_key(tenant: str, key: str) -> str:
    """A retried first turn must land in the same conversation, so its id derives from the key."""
    return "conv_" + hashlib.blake2b(f"{tenant}\x00idem\x00{key}".encode(), digest_size=12).hexdigest()


def tag_of_minted_id(item_id: str) -> str | None:
    """The slot tag inside an id the sidecar minted, or None for an id it did not mint."""
    match = _MINTED.match(item_id)
    return match.group(2) if match else None


def validate_client_id(value: object, param: str) -> str:
    if not isinstance(value, str) or not _CLIENT_ID.match(value):
        raise InvalidRequest(
            f"Invalid '{param}': expected 1-128 characters of [A-Za-z0-9_.-].",
            param=param,
            code="invalid_id",
        )
    return value


def is_client_id(value: str) -> bool:
    return bool(_CLIENT_ID.match(value))
