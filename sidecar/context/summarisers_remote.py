"""The `upstream` and `http` summarisers (docs/api.md §7), off the hot path: after a turn is answered, each
block it left unsummarised is summarised by the engine or by the policy's endpoint and stored (append-only),
so the next turn folds it. A summariser that fails or times out gives the template summary, logged and
counted: the fold still happens, just with the plainer text.

The `http` contract: `POST summariser_url` with
`{"object": "convostore.summary_request", "model", "conversation_id", "first_turn", "last_turn", "items",
"transcript", "template_summary"}` (items: the block's Responses items, oldest first; transcript: one line
per item); the answer is `200 {"summary": "<text>"}`. Anything else, or no answer within
HTTP_SUMMARY_TIMEOUT seconds, is a failure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from ..normalise import normalise_text
from .policy import WindowPolicy
from .summarise import transcript
from .summarisers import TEMPLATE, FoldedBlock

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..store.base import Store
    from ..upstream import Upstream

log = logging.getLogger("convostore.context")

HTTP_SUMMARY_TIMEOUT = 10.0
# A summary stands in for turns in every later prompt: longer than this it is a failure (the template
# summary is stored instead); an http answer longer than MAX_ANSWER_BYTES is not read to its end.
MAX_SUMMARY_BYTES = 16_384
MAX_ANSWER_BYTES = 65_536
ENGINE_SUMMARY_TIMEOUT = 60.0
ENGINE_SUMMARY_TOKENS = 200
# Summaries are background work: at most this many engine or endpoint calls at once per process.
CONCURRENT_SUMMARIES = 2
INSTRUCTIONS = (
    "Summarise the conversation excerpt below for the assistant that continues the conversation: keep "
    "names, numbers, decisions, open questions and what the user wants, in at most five sentences. "
    "Write only the summary."
)


class SummaryFailed(Exception):
    """The summariser gave no usable summary; the message says why (never the conversation's content)."""


class SummaryWriter:
    """Summarises and stores pending blocks in background tasks, one per block at a time."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self._running: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(CONCURRENT_SUMMARIES)

    def schedule(
        self,
        blocks: Sequence[FoldedBlock],
        *,
        store: Store,
        upstream: Upstream | None,
        tenant: str,
        conversation_id: str,
        policy: WindowPolicy,
        model: str | None,
    ) -> None:
        for block in blocks:
            key = (tenant, conversation_id, block.key)
            if key in self._running:
                continue
            job = self._write(block, store, upstream, tenant, conversation_id, policy, model)
            task = asyncio.get_running_loop().create_task(job)
            self._running[key] = task
            task.add_done_callback(lambda _, key=key: self._running.pop(key, None))  # type: ignore[misc]

    async def idle(self) -> None:
        """Wait for the summaries being written (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _write(
        self,
        block: FoldedBlock,
        store: Store,
        upstream: Upstream | None,
        tenant: str,
        conversation_id: str,
        policy: WindowPolicy,
        model: str | None,
    ) -> None:
        summariser = policy.summariser
        async with self._limit:
            started = time.perf_counter()
            try:
                if summariser == "http":
                    text = await http_summary(upstream, policy, block, model, conversation_id)
                else:
                    text = await engine_summary(upstream, block, model)
                written = f"{block.heading}\n{text}"
            except Exception as exc:  # whatever the summariser did, the fold gets the template summary
                known = isinstance(exc, SummaryFailed)
                reason = str(exc) if known else exc.__class__.__name__  # never echo the content
                log.warning(
                    "the %s summariser failed for turns %d-%d (%s): the template summary is stored",
                    summariser,
                    block.first_turn,
                    block.last_turn,
                    reason,
                    extra={"conversation_id": conversation_id},
                )
                if self.metrics is not None:
                    self.metrics.summary_failures.labels(summariser=summariser).inc()
                summariser, written = TEMPLATE, block.template
            try:
                kept = await store.add_summary(tenant, conversation_id, block.key, written.encode())
            except Exception as exc:  # the store is down: the next turn asks again
                log.warning("a summary could not be stored: %s", exc.__class__.__name__)
                return
            if kept is None or not kept.written:  # gone, or one was stored first (append-only): it stays
                return
            log.info(
                "summary of turns %d-%d stored (%s): the next turn's prefix fingerprint changes",
                block.first_turn,
                block.last_turn,
                summariser,
                extra={"conversation_id": conversation_id},
            )
            if self.metrics is not None:
                self.metrics.summaries.labels(summariser=summariser).inc()
                self.metrics.summary_latency_ms.observe((time.perf_counter() - started) * 1000)
                # Counted when stored: the turn that folds it sees the same stored text in its own
                # prompt and in the one it continues, so it cannot tell the change itself.
                self.metrics.apc_fingerprint_changes.inc()


async def engine_summary(upstream: Upstream | None, block: FoldedBlock, model: str | None) -> str:
    """The engine's own summary, through the API it serves (responses or chat)."""
    if upstream is None:
        raise SummaryFailed("no engine")
    api = await upstream.ensure_api()
    excerpt = transcript(block.items)
    body: dict[str, Any] = {"model": model} if model else {}
    if api == "responses":
        path = "/v1/responses"
        body |= {
            "instructions": INSTRUCTIONS,
            "input": excerpt,
            "max_output_tokens": ENGINE_SUMMARY_TOKENS,
            "temperature": 0,
        }
    else:
        path = "/v1/chat/completions"
        body |= {
            "messages": [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": excerpt}],
            "max_tokens": ENGINE_SUMMARY_TOKENS,
            "temperature": 0,
        }
    headers = upstream.headers({}, forward_client_key=False)
    async with asyncio.timeout(ENGINE_SUMMARY_TIMEOUT):
        try:
            response = await upstream.post(path, orjson.dumps(body), headers)
        except Exception as exc:  # UpstreamError / UpstreamTimeout: the engine is away
            raise SummaryFailed(exc.__class__.__name__) from None
        async with response:
            if response.status != 200:
                raise SummaryFailed(f"the engine answered {response.status}")
            answer = await response.read()
    return _usable(_engine_text(answer, api))


async def http_summary(
    upstream: Upstream | None,
    policy: WindowPolicy,
    block: FoldedBlock,
    model: str | None,
    conversation_id: str,
) -> str:
    if upstream is None or not policy.summariser_url:
        raise SummaryFailed("no session or no summariser_url")
    request = {
        "object": "convostore.summary_request",
        "model": model,
        "conversation_id": conversation_id,
        "first_turn": block.first_turn,
        "last_turn": block.last_turn,
        "items": list(block.items),
        "transcript": transcript(block.items),
        "template_summary": block.template,
    }
    async with upstream.session.post(
        policy.summariser_url,
        data=orjson.dumps(request),
        headers={"Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=HTTP_SUMMARY_TIMEOUT),
    ) as response:
        if response.status != 200:
            raise SummaryFailed(f"{policy.summariser_url} answered {response.status}")
        # Read no more than a usable answer can hold: an endpoint must not make the sidecar buffer megabytes.
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise SummaryFailed(f"an answer over {MAX_ANSWER_BYTES} bytes")
        answer = b"".join(chunks)
    try:
        summary = orjson.loads(answer).get("summary")
    except (orjson.JSONDecodeError, AttributeError):
        raise SummaryFailed("the answer is not a JSON object") from None
    return _usable(summary)


def _engine_text(answer: bytes, api: str) -> Any:
    try:
        data = orjson.loads(answer)
        if api != "responses":
            return data["choices"][0]["message"]["content"]
        texts = [
            part.get("text", "")
            for item in data.get("output") or []
            if item.get("type") == "message"
            for part in item.get("content") or []
            if part.get("type") == "output_text"
        ]
        return "".join(texts)
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise SummaryFailed(f"the engine's {api} answer has no text") from None


def _usable(summary: Any) -> str:
    """One normalised text (NFC, \\n), so the stored bytes are what every replica renders."""
    if not isinstance(summary, str) or not summary.strip():
        raise SummaryFailed("no summary text")
    text = normalise_text(summary.strip())
    if len(text.encode()) > MAX_SUMMARY_BYTES:
        raise SummaryFailed(f"a summary of {len(text.encode())} bytes, over {MAX_SUMMARY_BYTES}")
    return text
