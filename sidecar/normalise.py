"""Byte-stable normalisation: the same history always renders to the same bytes (docs/api.md §6)."""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson

_SORTED = orjson.OPT_SORT_KEYS


def normalise_text(text: str) -> str:
    """NFC and '\\n' line endings; nothing else, so the model sees what the user wrote."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text


def canonical_json(value: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8: the one encoding of a JSON value."""
    return orjson.dumps(_normalise_json_strings(value), option=_SORTED)


def canonical_json_text(text: str) -> str:
    """Function-call arguments and similar JSON carried in a string: re-encode canonically when it
    parses, otherwise keep the (text-normalised) string, because engines do emit broken JSON."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return normalise_text(text)
    return canonical_json(value).decode()


def _normalise_json_strings(value: Any) -> Any:
    if isinstance(value, str):
        return normalise_text(value)
    if isinstance(value, dict):
        return {normalise_text(k): _normalise_json_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise_json_strings(v) for v in value]
    return value


def encode_item(item: dict[str, Any]) -> bytes:
    """Stored form of one item: sorted keys so re-encoding a dict never changes its bytes."""
    return orjson.dumps(item, option=_SORTED)
