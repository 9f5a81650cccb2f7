"""What a background run is started with, kept in the store so any replica can settle the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..ids import parse_response_id
from ..store.base import Claim
from ..turns import TurnPlan


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The response object as created (status queued) and the turn it will store: enough for a reaper
    on another replica to store what a dead runner captured, exactly as the runner would have."""

    base: dict[str, Any]
    conversation_id: str
    previous_response_id: str | None
    in_conversation: bool
    create: bool
    input_items: list[tuple[str, bytes]]
    idempotency_key: str | None
    request_hash: str
    holds_slot: bool = False  # the run holds one of its tenant's quota slots (released when it ends)
    fingerprint: str = ""  # the prompt's prefix fingerprint, stored with the turn (TurnPlan.fingerprint)

    @classmethod
    def of(
        cls,
        plan: TurnPlan,
        base: dict[str, Any],
        idempotency_key: str | None,
        request_hash: str,
        *,
        holds_slot: bool = False,
    ) -> RunRecord:
        return cls(
            base,
            plan.conversation_id,
            plan.previous_response_id,
            plan.in_conversation,
            plan.create,
            list(plan.input_items),
            idempotency_key,
            request_hash,
            holds_slot,
            plan.fingerprint,
        )

    def encode(self) -> bytes:
        # Item bytes go in as text: read back they are the very bytes begin_turn's plan held.
        return orjson.dumps(
            {
                "base": self.base,
                "conversation_id": self.conversation_id,
                "previous_response_id": self.previous_response_id,
                "in_conversation": self.in_conversation,
                "create": self.create,
                "input_items": [[item_id, item.decode()] for item_id, item in self.input_items],
                "idempotency_key": self.idempotency_key,
                "request_hash": self.request_hash,
                "holds_slot": self.holds_slot,
                "fingerprint": self.fingerprint,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> RunRecord:
        data = orjson.loads(raw)
        return cls(
            data["base"],
            data["conversation_id"],
            data["previous_response_id"],
            data["in_conversation"],
            data["create"],
            [(item_id, item.encode()) for item_id, item in data["input_items"]],
            data["idempotency_key"],
            data["request_hash"],
            data.get("holds_slot", False),  # records written before quotas had none
            data.get("fingerprint", ""),  # nor, before replays reported it, a fingerprint
        )

    def plan(self, tenant: str, response_id: str) -> TurnPlan:
        """The turn plan to store the run with (its record index was reserved when the run was created)."""
        parsed = parse_response_id(response_id)
        assert parsed is not None
        plan = TurnPlan(
            tenant,
            self.conversation_id,
            parsed[0],
            self.previous_response_id,
            self.in_conversation,
            [],
            0,
            response_id,
        )
        plan.input_items = list(self.input_items)
        plan.create = self.create
        plan.reserved = True
        plan.fingerprint = self.fingerprint
        if self.idempotency_key:
            plan.claim = Claim(self.idempotency_key, self.request_hash)
        return plan
