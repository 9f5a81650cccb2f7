"""The prompt a stored history would give the engine next, and the stateful headers that report it
(CONTRACT §3): for the session API and the Conversations API, which answer without calling the engine."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import CONTEXT, STORE, UPSTREAM
from ..context.packs import PACK_HEADER
from ..context.policy import WindowPolicy
from ..context.prompt import Prompt
from ..errors import ConvoStoreError
from ..fingerprint import estimate_tokens, prefix_fingerprint
from ..middleware import REQUEST_ID, TENANT
from ..store.base import History
from .common import stateful_headers


def check_pack(request: web.Request) -> None:
    """A prompt pack header naming no pack is a 400 before a route writes (an error after the write would be
    retried, and store it twice)."""
    request.app[CONTEXT].choose(None, request.headers.get(PACK_HEADER))


def model_query(request: web.Request) -> str | None:
    """The model whose policy and pack apply (`?model=`); `policies.default` without it."""
    return request.query.get("model") or None


async def history_prompt(
    request: web.Request,
    items: list[bytes],
    *,
    model: str | None,
    override: WindowPolicy | None = None,
    truncation: str = "auto",
    conversation_id: str | None = None,
    history_param: str = "conversation_id",
    summaries: dict[str, bytes] | None = None,
) -> Prompt:
    """The prompt for a history as the proxy would send it next: pack, folds (with the conversation's
    stored summaries) and real counts. A history over the budget is trimmed ("auto"), since there is no
    request here to refuse."""
    return await request.app[CONTEXT].prompt(
        model=model,
        pack_header=request.headers.get(PACK_HEADER),
        upstream=request.app[UPSTREAM],
        history=items,
        truncation=truncation,
        policy_override=override,
        tenant=request[TENANT],
        store=request.app[STORE],
        conversation_id=conversation_id,
        history_param=history_param,  # a stored compaction item that no longer verifies is named by it
        summaries=summaries,  # those the history's resolve brought: no second round trip
    )


async def counters_after_write(
    request: web.Request, conversation_id: str, session_bytes: int, appended: int
) -> tuple[str, int]:
    """The fingerprint and input tokens of the conversation after a write. Only when a pack, a policy or a
    tokenizer shapes the prompt is the history read back (one round trip); else they follow from sizes."""
    context = request.app[CONTEXT]
    pack_header = request.headers.get(PACK_HEADER)
    if not context.shapes(None, pack_header):
        return prefix_fingerprint(), estimate_tokens(session_bytes)
    history = await request.app[STORE].resolve_conversation(request[TENANT], conversation_id)
    if history is None:  # deleted in between: what was written is all there is to count
        return prefix_fingerprint(), estimate_tokens(session_bytes)
    try:
        summaries = history.summaries  # both prompts fold with what the resolve brought
        prompt = await history_prompt(
            request, history.items, model=None, conversation_id=conversation_id, summaries=summaries
        )
        if appended and len(history.items) > appended:
            earlier = history.items[:-appended]
            before = await history_prompt(
                request, earlier, model=None, conversation_id=conversation_id, summaries=summaries
            )
            context.note_change(conversation_id, before, prompt)
    except ConvoStoreError:
        # The write stands, and must not be answered with an error: a history over its budget (the next turn
        # will say what does not fit), or a stored compaction item that no longer verifies, is estimated.
        return prefix_fingerprint(), estimate_tokens(session_bytes)
    return prompt.fingerprint, prompt.input_tokens


def read_headers(
    request: web.Request, conversation_id: str, history: History, prompt: Prompt
) -> dict[str, str]:
    """The stateful headers of a read of the conversation (CONTRACT §3): its newest response, if any."""
    return stateful_headers(
        request_id=request[REQUEST_ID],
        conversation_id=conversation_id,
        version=history.version,
        fingerprint=prompt.fingerprint,
        estimated_tokens=prompt.input_tokens,
        response_id=history.response_id,
    )
