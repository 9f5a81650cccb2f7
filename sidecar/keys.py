"""Every Redis key ConvoStore uses is built here; one conversation's keys share one {tag} hash slot."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def tag_prefix(tag: str) -> str:
    return f"cs:{{{tag}}}:"


def records_key(tag: str) -> str:
    """The slot's response records: a LIST indexed by the number inside each response id. Records of
    every conversation sharing the tag (rarely more than one) live here, each naming its conversation."""
    return f"{tag_prefix(tag)}rec"


@dataclass(frozen=True, slots=True)
class ConversationKeys:
    """Keys of one conversation. Segments hold the item bytes themselves (no id->item hash: ids live
    inside each item's JSON, and a second copy of every id would cost memory on every turn).
    Lua scripts derive segment, idempotency and response keys from
    `prefix`/`tag_prefix`, which is cluster-safe because every derived key carries the same tag."""

    tag: str
    tenant: str
    conversation_id: str

    @property
    def tag_prefix(self) -> str:
        return tag_prefix(self.tag)

    @property
    def prefix(self) -> str:
        return f"{self.tag_prefix}{self.tenant}:{self.conversation_id}:"

    @property
    def meta(self) -> str:
        return self.prefix + "meta"

    def segment(self, index: int) -> str:
        return f"{self.prefix}seg:{index}"

    def idempotency(self, key: str | None) -> str:
        # Scripts take a fixed number of KEYS, so "no key" is a placeholder in the same slot.
        return f"{self.prefix}idem:{key}" if key else f"{self.prefix}idem:-"


def alias_key(tenant: str, alias: str) -> str:
    """A response id a gateway chose -> the one the store minted (alias_response-1.lua): in a slot found from
    the chosen id alone. '@' is in no tenant's name, so no conversation's key can be this one."""
    tag = hashlib.blake2b(f"{tenant}\x00@alias\x00{alias}".encode(), digest_size=6).hexdigest()
    return f"cs:{{{tag}}}:@alias:{tenant}:{alias}"


def secret_key(name: str) -> str:
    """A secret every replica shares (shared_secret-1.lua), e.g. the compaction tokens' key."""
    return f"cs:{{secret}}:{name}"


def _tenant_tag(tenant: str) -> str:
    # A slot of the tenant's own, apart from every conversation's: quota keys are touched on every request.
    return "q." + hashlib.blake2b(tenant.encode(), digest_size=6).hexdigest()


def rate_key(tenant: str) -> str:
    """The tenant's requests-per-minute state (one value: the GCRA theoretical arrival time)."""
    return f"cs:{{{_tenant_tag(tenant)}}}:rate"


def usage_key(tenant: str) -> str:
    """The tenant's stored usage: totals, and what each conversation was counted for."""
    return f"cs:{{{_tenant_tag(tenant)}}}:usage"


def running_key(tenant: str) -> str:
    """The tenant's background responses holding a slot of its quota (a ZSET: response id -> stale at)."""
    return f"cs:{{{_tenant_tag(tenant)}}}:bg"


def run_key(tag: str, response_id: str) -> str:
    """A background run's HASH (tenant, status, record, owner, last sequence number, cancel flag). Its
    event log (a STREAM) and its lease (a STRING with a short PX) are this key plus `:ev` and `:lease`,
    derived inside the scripts: the same {tag} slot as the response id, so one script reaches all three."""
    return f"{tag_prefix(tag)}run:{response_id}"


# Background runs still going, by when a reaper should next look at their lease (a ZSET of response ids).
# One key for every replica to read; only an index: the truth is each run's own keys in its own slot.
RUNS_INDEX_KEY = "cs:{runs}:active"
