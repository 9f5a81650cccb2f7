"""Compaction (`POST /v1/responses/compact`): fold a window into one `compaction` item whose opaque,
tamper-evident `encrypted_content` only this sidecar (any replica sharing the policy file's key) expands
back into the summary text when a later request sends it in `input`.

The token is `cs1.<payload>.<mac>`, both base64url: the payload is zlib'd JSON (summary text, how many
turns it covers, the model, when), the mac an HMAC-SHA256 over the tenant and the payload. The tenant is
not in the payload, only in the mac: another tenant's token fails exactly like a forged one, and tokens
name no tenant. The summary is signed, not encrypted: whoever holds a token can read its summary (it is
their own conversation's).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import InvalidRequest
from ..policy import COMPACTION_KEY_MIN_BYTES
from ..wire.items import Item
from .summarise import template_summary
from .trim import split_turns

TOKEN_PREFIX = "cs1"
_MAC_CONTEXT = b"convostore.compaction.v1\x00"
# Turns compact keeps verbatim when the model's policy sets no `keep_last_turns`.
DEFAULT_KEEP_LAST_TURNS = 2
SUMMARY_SEPARATOR = "\n\n"
_NEEDLE = b'"type":"compaction"'  # how a compaction item's stored (canonical) bytes always read


class CompactionKeyError(ValueError):
    """The policy file's compaction key cannot be used; the message names its path."""


class CompactionNotConfigured(InvalidRequest):
    """No `compaction` key in the policy file: tokens could not be verified by another replica or after a
    restart, so none are issued (and none are accepted)."""

    code = "compaction_not_configured"


@dataclass(frozen=True, slots=True)
class CompactedSummary:
    text: str
    turns: int  # how many turns of the conversation the summary covers (the next fold numbers from here)
    model: str


def load_compaction_key(policy: Mapping[str, Any]) -> bytes | None:
    """`compaction.key` (a string) or the contents of `compaction.key_file`; None when neither is set."""
    spec = policy.get("compaction") or {}
    if spec.get("key") is not None:
        return str(spec["key"]).encode()
    path = spec.get("key_file")
    if path is None:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise CompactionKeyError(f"compaction.key_file: cannot read {path}: {exc.strerror}") from None
    if len(key) < COMPACTION_KEY_MIN_BYTES:
        raise CompactionKeyError(
            f"compaction.key_file: {path} holds {len(key)} bytes; "
            f"a key needs at least {COMPACTION_KEY_MIN_BYTES}"
        )
    return key


class CompactionCodec:
    """Signs and verifies compaction tokens with one key: the policy file's, else one every replica shares
    through the store (share_through), fetched when a token is first made or checked; neither: refused."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key
        self._shared: Callable[[], Awaitable[bytes]] | None = None

    @property
    def configured(self) -> bool:
        return self._key is not None or self._shared is not None

    def share_through(self, secret: Callable[[], Awaitable[bytes]]) -> None:
        """Without a policy key: the key is the store's shared secret (Store.shared_secret)."""
        if self._key is None:
            self._shared = secret

    async def ready(self) -> None:
        """The key in hand before a sign or verify (a store that is down: StoreDown, a 503)."""
        if self._key is None and self._shared is not None:
            self._key = await self._shared()

    async def ready_for(self, raw_items: Sequence[bytes]) -> None:
        """ready() when `raw_items` hold a compaction item: a turn without one never asks the store."""
        if self._key is None and self._shared is not None and _NEEDLE in b"\n".join(raw_items):
            await self.ready()

    def sign(self, tenant: str, summary: CompactedSummary) -> str:
        payload = {"s": summary.text, "n": summary.turns, "m": summary.model, "iat": int(time.time())}
        body = _b64(zlib.compress(orjson.dumps(payload)))
        return f"{TOKEN_PREFIX}.{body}.{_b64(self._mac(tenant, body))}"

    def verify(self, tenant: str, token: Any, param: str, what: str | None = None) -> CompactedSummary:
        """The summary a token carries, or a 400 naming `param` (and `what`, by default `param`) when it is
        not one this sidecar issued for this tenant (forged, altered, truncated, another tenant's, or
        signed with another key)."""
        if self._key is None:
            raise not_configured(param)
        what = what or f"'{param}'"
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise _invalid(param, what)
        body, mac = parts[1], parts[2]
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise _invalid(param, what) from None
        if not hmac.compare_digest(given, self._mac(tenant, body)):
            raise _invalid(param, what)
        # Only a payload this sidecar signed is decompressed and parsed.
        payload = orjson.loads(zlib.decompress(_unb64(body)))
        return CompactedSummary(text=payload["s"], turns=int(payload["n"]), model=payload["m"])

    def _mac(self, tenant: str, body: str) -> bytes:
        if self._key is None:
            raise not_configured(None)  # share_through without ready(): a caller's bug, refused all the same
        message = _MAC_CONTEXT + tenant.encode() + b"\x00" + body.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()


def not_configured(param: str | None) -> CompactionNotConfigured:
    return CompactionNotConfigured(
        "Compaction is not configured: set compaction.key (or compaction.key_file) in the policy file "
        "(CONVOSTORE_CONFIG); every replica needs the same key.",
        param=param,
    )


def _invalid(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid {what}: not a compaction this server issued for this caller (forged, altered, another "
        "tenant's, or signed with another key).",
        param=param,
        code="invalid_encrypted_content",
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_compaction(raw: bytes) -> bool:
    """Whether stored item bytes are a compaction item (the fast check runs at C speed on every item)."""
    return _NEEDLE in raw and orjson.loads(raw).get("type") == "compaction"


def expand_compactions(
    codec: CompactionCodec,
    tenant: str,
    history: Sequence[bytes],
    new_input: Sequence[bytes],
    history_param: str = "previous_response_id",
) -> tuple[list[bytes], list[bytes], list[str]]:
    """The history and new input without their compaction items, and the summaries those carried, oldest
    first: the prompt sends them as summary text (prompt.py) and the engine never sees a token. A bad
    token in the new input is a 400 naming `input[i].encrypted_content`; one in the stored history, a 400
    naming `history_param`, the parameter the request named its history by."""
    # Almost no history holds one: one byte search over the joined items (newline-separated: the needle has
    # none, so a hit lies inside one item) beats a check per item; a hit is then verified item by item.
    if _NEEDLE not in b"\n".join([*history, *new_input]):
        return list(history), list(new_input), []
    summaries: list[str] = []
    kept_history: list[bytes] = []
    for raw in history:
        if is_compaction(raw):
            summaries.append(_verify_stored(codec, tenant, orjson.loads(raw), history_param).text)
        else:
            kept_history.append(raw)
    kept_input: list[bytes] = []
    for n, raw in enumerate(new_input):
        if is_compaction(raw):
            summaries.append(_verify_item(codec, tenant, raw, f"input[{n}].encrypted_content").text)
        else:
            kept_input.append(raw)
    return kept_history, kept_input, summaries


def _verify_item(codec: CompactionCodec, tenant: str, raw: bytes, param: str) -> CompactedSummary:
    return codec.verify(tenant, orjson.loads(raw).get("encrypted_content"), param)


def _verify_stored(codec: CompactionCodec, tenant: str, item: Item, history_param: str) -> CompactedSummary:
    """A compaction item of the stored history that no longer verifies (items are checked when stored, so
    it was signed with a key since replaced): the error names the parameter that named the history
    (`previous_response_id`, `conversation`, a session API's `conversation_id`) and the item."""
    what = f"stored item '{item.get('id')}' (encrypted_content)"
    return codec.verify(tenant, item.get("encrypted_content"), history_param, what)


@dataclass(frozen=True, slots=True)
class Compacted:
    """A compacted window: `output` (the pinned instructions, one compaction item unless nothing was
    folded, then the kept turns verbatim) and what was folded."""

    output: list[Item]
    folded_turns: int
    summary: CompactedSummary | None


def compact_window(
    codec: CompactionCodec,
    tenant: str,
    model: str,
    items: Sequence[Item],
    *,
    first_input: int,
    keep_last_turns: int | None,
    mint: Callable[[str], str],
    history_param: str = "previous_response_id",
) -> Compacted:
    """Fold every turn but the last `keep_last_turns` into one compaction item. Earlier compaction items
    (verified) are folded too: their summaries come first and turn numbers carry on after them, so
    compacting a compacted window again loses nothing."""
    earlier: list[CompactedSummary] = []
    rest: list[Item] = []
    for n, item in enumerate(items):
        if item.get("type") == "compaction" and n < first_input:
            earlier.append(_verify_stored(codec, tenant, item, history_param))
        elif item.get("type") == "compaction":
            param = f"input[{n - first_input}].encrypted_content"
            earlier.append(codec.verify(tenant, item.get("encrypted_content"), param))
        else:
            rest.append(item)
    pinned, spans = split_turns(rest)
    keep = keep_last_turns or DEFAULT_KEEP_LAST_TURNS
    folded = max(0, len(spans) - keep)
    if not folded and not earlier:
        return Compacted(output=list(rest), folded_turns=0, summary=None)
    covered = sum(s.turns for s in earlier)
    texts = [s.text for s in earlier]
    if folded:
        texts.append(template_summary(covered + 1, [rest[slice(*spans[t])] for t in range(folded)]))
    summary = CompactedSummary(SUMMARY_SEPARATOR.join(texts), covered + folded, model)
    item = {"type": "compaction", "id": mint("cmp"), "encrypted_content": codec.sign(tenant, summary)}
    kept_from = spans[folded][0] if folded < len(spans) else len(rest)
    output = [*rest[:pinned], item, *rest[kept_from:]]
    return Compacted(output=output, folded_turns=folded, summary=summary)


async def check_compaction_items(
    codec: CompactionCodec, tenant: str, items: Sequence[Item], param: str
) -> None:
    """Compaction items about to be stored (session API, Conversations API) verify for this tenant, else a
    400 naming the item and nothing is written: a stored item that does not verify would refuse every
    later turn of its conversation."""
    for n, item in enumerate(items):
        if item.get("type") == "compaction":
            await codec.ready()  # the store's shared key, fetched once, when no policy key is set
            codec.verify(tenant, item.get("encrypted_content"), f"{param}[{n}].encrypted_content")
