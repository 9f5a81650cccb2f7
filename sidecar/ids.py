"""Id minting and parsing: every id minted inside a conversation carries the conversation's slot tag."""

from __future__ import annotations

import hashlib
import os
import re

from .errors import InvalidRequest

# 48 bits: a brand-new conversation's slot is, in practice, its own, so its first response can take
# record index 0 without asking Redis first (lua/includes/history.lua reads the tag at this width).
TAG_LEN = 12
_RANDOM_BYTES = 10  # 80 random bits after the slot tag: short ids, since each is stored per item
# Client-chosen ids become part of Redis keys: no ':' (our separator) and no braces (hash-tag syntax).
CLIENT_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"  # published in openapi.json (api_shapes.py)
# fullmatch, never match: `$` also matches before a final newline, and an id ending in one passed, broke the
# response headers after the write and shifted the fields of the newline-separated records.
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
_MINTED = re.compile(rf"^(resp|msg|fc|fco|rs|item|cmp)_([0-9a-f]{{{TAG_LEN}}})[0-9a-f]{{8,64}}$")


def conversation_tag(tenant: str, conversation_id: str) -> str:
    """Short stable hash naming the Redis Cluster slot of a conversation (tenant-scoped)."""
    digest = hashlib.blake2b(f"{tenant}\x00{conversation_id}".encode(), digest_size=TAG_LEN // 2)
    return digest.hexdigest()


def mint_in_conversation(prefix: str, tag: str) -> str:
    return f"{prefix}_{tag}{os.urandom(_RANDOM_BYTES).hex()}"


def derive_in_conversation(prefix: str, tag: str, seed: str, n: int) -> str:
    """The id a keyed write gives its `n`-th item: a retry with the same key (the seed names the tenant, the
    conversation and the key) answers with the ids the first call stored."""
    digest = hashlib.blake2b(f"{seed}\x00{n}".encode(), digest_size=_RANDOM_BYTES).hexdigest()
    return f"{prefix}_{tag}{digest}"


# A response id names where its record lives: resp_<slot tag><index in the slot's record list><random>.
# The index is reserved before the engine is called (the id reaches the client before the turn is stored);
# the random part makes ids unguessable and is checked against the record.
_RESPONSE = re.compile(rf"^resp_([0-9a-f]{{{TAG_LEN}}})([0-9a-f]{{8}})([0-9a-f]{{12}})$")
UNSTORED_INDEX = 0xFFFFFFFF  # `store: false` responses: an index no record list reaches


def response_random() -> str:
    return os.urandom(6).hex()


def mint_response_id(tag: str, index: int, random_part: str | None = None) -> str:
    return f"resp_{tag}{index:08x}{random_part or response_random()}"


def parse_response_id(response_id: str) -> tuple[str, int, str] | None:
    """(slot tag, record index, random part) of an id the sidecar minted, else None."""
    match = _RESPONSE.fullmatch(response_id)
    return (match.group(1), int(match.group(2), 16), match.group(3)) if match else None


def mint_conversation_id() -> str:
    return f"conv_{os.urandom(12).hex()}"


def conversation_id_for_idempotency_key(tenant: str, key: str) -> str:
    """A retried first turn must land in the same conversation, so its id derives from the key."""
    return "conv_" + hashlib.blake2b(f"{tenant}\x00idem\x00{key}".encode(), digest_size=12).hexdigest()


def tag_of_minted_id(item_id: str) -> str | None:
    """The slot tag inside an id the sidecar minted, or None for an id it did not mint."""
    match = _MINTED.fullmatch(item_id)
    return match.group(2) if match else None


def validate_client_id(value: object, param: str) -> str:
    if not isinstance(value, str) or not _CLIENT_ID.fullmatch(value):
        raise InvalidRequest(
            f"Invalid '{param}': expected 1-128 characters of [A-Za-z0-9_.-].",
            param=param,
            code="invalid_id",
        )
    return value


def is_client_id(value: str) -> bool:
    return bool(_CLIENT_ID.fullmatch(value))
