"""What the store must hold after a fuzz run: built only from the answers to accepted (2xx) requests.

Each accepted write moves the model the way the contract says it moves the store (one version per write,
none for a replayed Idempotency-Key, branches from `previous_response_id`, deletes); a rejected request moves
nothing. `mismatches()` then compares the model with the live store, read through the API and by listing
the backend's conversations, so a write that a 4xx left behind (or an accepted one that got lost) shows.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

from sidecar.wire.chat_messages import message_to_items, messages_to_items
from sidecar.wire.items import parse_input

from .bad_requests import CLIENT_CONVERSATIONS, TENANTS, Ref

ITEM_ID_PREFIXES = ("msg_", "fc_", "fco_", "rs_", "item_", "cmp_")


@dataclass
class Conversation:
    version: int = 0
    items: int | None = 0  # None once a stream made the count unknowable from the answer alone
    turns: int = 0


@dataclass
class StoredResponse:
    tenant: str
    conversation_id: str
    items: int | None  # the length of its whole history
    live: bool = True


@dataclass
class StoreModel:
    conversations: dict[tuple[str, str], Conversation] = field(default_factory=dict)
    responses: dict[str, StoredResponse] = field(default_factory=dict)
    # Every id seen in an answer, live or not, per tenant: what `Ref`s resolve to.
    known: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # Keyed writes answering no version of their own (conversation items): (tenant, conv, key, body).
    keyed: set[tuple[str, str, str, bytes | None]] = field(default_factory=set)

    # -- ids -----------------------------------------------------------------------------------------

    def resolve(self, ref: Ref, tenant: str | None) -> str:
        owner = tenant if tenant in TENANTS else TENANTS[0]
        if ref.foreign:
            owner = TENANTS[1] if owner == TENANTS[0] else TENANTS[0]
        seen = self.known.get((owner, ref.kind), [])
        if seen:
            return seen[ref.index % len(seen)]
        if ref.kind == "conversation":
            return CLIENT_CONVERSATIONS[ref.index % len(CLIENT_CONVERSATIONS)]
        prefix = "resp" if ref.kind == "response" else "msg"
        return f"{prefix}_{os.urandom(16).hex()}"

    def _remember(self, tenant: str, kind: str, value: Any) -> None:
        if not isinstance(value, str) or not value:
            return
        seen = self.known.setdefault((tenant, kind), [])
        if value not in seen:
            seen.append(value)

    def learn_ids(self, tenant: str, body: Any, depth: int = 0) -> None:
        """Ids anywhere near the top of an answer, for later requests to aim at."""
        if depth > 4:
            return
        if isinstance(body, dict):
            for key, value in body.items():
                if key == "id" and isinstance(value, str):
                    if value.startswith(ITEM_ID_PREFIXES):
                        self._remember(tenant, "item", value)
                    elif value.startswith("resp_"):
                        self._remember(tenant, "response", value)
                    elif value.startswith("conv_"):
                        self._remember(tenant, "conversation", value)
                elif key in ("conversation_id", "response_id"):
                    self._remember(tenant, key.removesuffix("_id"), value)
                else:
                    self.learn_ids(tenant, value, depth + 1)
        elif isinstance(body, list):
            for value in body[:50]:
                self.learn_ids(tenant, value, depth + 1)

    # -- accepted writes -----------------------------------------------------------------------------

    def conversation(self, tenant: str, conversation_id: str) -> Conversation:
        self._remember(tenant, "conversation", conversation_id)
        return self.conversations.setdefault((tenant, conversation_id), Conversation())

    def write(
        self,
        tenant: str,
        conversation_id: str,
        *,
        added: int | None,
        parent: str | None = None,
        response_id: str | None = None,
        version: int | None = None,
    ) -> None:
        """One accepted turn: `added` items after the head, or after `parent`'s history (a branch)."""
        conv = self.conversation(tenant, conversation_id)
        conv.version += 1
        if version is not None:
            assert version == conv.version, f"{conversation_id}: version {version}, model {conv.version}"
        if parent is None:
            base = conv.items
        else:
            base = self.responses[parent].items if parent in self.responses else None
        conv.items = None if base is None or added is None else base + added
        if response_id is not None:
            conv.turns += 1
            self.responses[response_id] = StoredResponse(tenant, conversation_id, conv.items)
            self._remember(tenant, "response", response_id)

    def keyed_replay(self, tenant: str, conversation_id: str, key: str | None, body: bytes | None) -> bool:
        """Whether an accepted keyed write is the replay of an earlier one (the same key and body, in a
        conversation that lived since): it stored nothing."""
        if key is None:
            return False
        seen = (tenant, conversation_id, key, body)
        replay = seen in self.keyed
        self.keyed.add(seen)
        return replay

    def drop_conversation(self, tenant: str, conversation_id: str) -> None:
        self.conversations.pop((tenant, conversation_id), None)
        self.keyed = {seen for seen in self.keyed if seen[:2] != (tenant, conversation_id)}
        for response in self.responses.values():
            if response.tenant == tenant and response.conversation_id == conversation_id:
                response.live = False

    def is_replay(self, response_id: str | None) -> bool:
        return response_id is not None and response_id in self.responses

    def unstored(self, tenant: str, response_id: str) -> None:
        """A `store: false` response: its id must never resolve."""
        self.responses[response_id] = StoredResponse(tenant, "", None, live=False)


def input_count(value: Any) -> int:
    return len(parse_input(value))


def messages_count(value: Any) -> int:
    return len(messages_to_items(value))


def store_response_count(body: dict[str, Any]) -> int:
    """Items a store_response body carries (it was accepted, so its shape is one of the valid ones)."""
    if "response" in body:
        response = body["response"]
        if response.get("object") == "chat.completion" or "choices" in response:
            return len(message_to_items(response["choices"][0].get("message"), "m"))
        return len(response["output"])
    if "output" in body:
        return len(body["output"])
    return len(message_to_items(body["message"], "message"))
