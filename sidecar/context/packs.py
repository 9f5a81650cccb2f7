"""Frozen prompt packs (docs/api.md §6, §9): canonicalised once at load, their bytes first in every prompt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import InvalidRequest
from ..normalise import canonical_json, encode_item, normalise_text
from ..wire.items import parse_item
from ..wire.tools import chat_tool

PACK_HEADER = "X-Prompt-Pack"


@dataclass(frozen=True, slots=True)
class Pack:
    """A pack as the engine sees it: a system text, exemplar items (their stored encoding) and tools
    (Responses-style, canonical). `prefix` is the canonical bytes of system and exemplars (hashed into the
    fingerprint with the tools)."""

    name: str = ""
    system: str = ""
    few_shot: tuple[bytes, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    prefix: bytes = b""
    chat_tools: tuple[dict[str, Any], ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not (self.system or self.few_shot or self.tools)


NO_PACK = Pack()


def load_pack(name: str, spec: Mapping[str, Any] | None) -> Pack:
    """One pack from the (already validated) policy file, in its one encoding."""
    spec = spec or {}
    system = normalise_text(spec.get("system") or "")
    few_shot = tuple(
        encode_item(parse_item(dict(message), f"packs.{name}.few_shot[{n}]"))
        for n, message in enumerate(spec.get("few_shot") or [])
    )
    tools = tuple(orjson.loads(canonical_json(list(spec.get("tools") or []))))
    prefix = canonical_json({"system": system, "few_shot": [orjson.loads(i) for i in few_shot]})
    return Pack(name, system, few_shot, tools, prefix, tuple(chat_tool(t) for t in tools))


def load_packs(policy: Mapping[str, Any]) -> dict[str, Pack]:
    return {name: load_pack(name, spec) for name, spec in (policy.get("packs") or {}).items()}


def choose_pack(packs: Mapping[str, Pack], header: str | None, policy_pack: str | None) -> Pack:
    """The request's `X-Prompt-Pack`, else its policy's `pack`, else none. An unknown name is the
    client's mistake, named in a 400 (a silently ignored pack would change every prompt's prefix)."""
    if header is not None:
        name = header.strip()
        if name not in packs:
            raise InvalidRequest(
                f"Unknown prompt pack {name!r}: the policy file defines "
                + (", ".join(map(repr, sorted(packs))) or "none")
                + ".",
                param=PACK_HEADER,
                code="unknown_prompt_pack",
            )
        return packs[name]
    if policy_pack:
        return packs[policy_pack]
    return NO_PACK
