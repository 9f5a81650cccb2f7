"""Shared pieces of the context-window tests: stored-item bytes, a prompt builder with estimates."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from sidecar.context.packs import NO_PACK, Pack
from sidecar.context.policy import NO_POLICY, WindowPolicy
from sidecar.context.prompt import Prompt, build_prompt
from sidecar.context.tokens import ESTIMATE, CountCache, TokenCounter
from sidecar.normalise import encode_item
from sidecar.wire.items import parse_item


def item(raw: dict[str, Any]) -> bytes:
    """An item as the store holds it (parsed, canonical; ids left out: they do not matter here)."""
    return encode_item(parse_item(raw, "input[0]"))


def user(text: str) -> bytes:
    return item({"role": "user", "content": text})


def assistant(text: str) -> bytes:
    return item({"role": "assistant", "content": text})


def prompt(
    history: list[bytes],
    new_input: list[bytes] = (),  # type: ignore[assignment]
    *,
    policy: WindowPolicy = NO_POLICY,
    pack: Pack = NO_PACK,
    counter: TokenCounter | None = None,
    **kwargs: Any,
) -> Prompt:
    return asyncio.run(
        build_prompt(
            pack=pack,
            policy=policy,
            counter=counter or TokenCounter(ESTIMATE, "", CountCache()),
            history=history,
            new_input=list(new_input),
            **kwargs,
        )
    )


def chat_bytes(p: Prompt) -> bytes:
    """The chat-completions request's messages, as the engine receives them."""
    return orjson.dumps(p.chat_messages())
