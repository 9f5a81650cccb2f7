"""The context window service of one app: packs, policies and tokenizers loaded once at start-up, the
item-count cache, the engine's `/tokenize`, and the fingerprint and summary metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from .compaction import CompactionCodec, CompactionKeyError, expand_compactions, load_compaction_key
from .packs import Pack, choose_pack, load_packs
from .policy import UnsupportedSummariser, WindowPolicy, load_policies, policy_for
from .prompt import Prompt, build_prompt
from .summarisers import TEMPLATE, StoredSummaries
from .summarisers_remote import SummaryWriter
from .tokens import (
    ENGINE,
    ESTIMATE,
    TOKENIZER,
    CountCache,
    TokenCounter,
    TokenizerLoadError,
    load_tokenizers,
)

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..store.base import Store
    from ..upstream import Upstream

log = logging.getLogger("convostore.context")

TOKENIZE_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
# After the engine's /tokenize fails (absent, down), counts are estimates for this long before it is retried.
ENGINE_RETRY_SECONDS = 30.0


class ContextWindow:
    def __init__(self, policy: Mapping[str, Any], metrics: Metrics | None = None) -> None:
        """Raises ValueError subclasses naming the policy path (an unserved summariser, an unreadable
        tokenizer): start-up stops on them."""
        self.packs = load_packs(policy)
        self.policies = load_policies(policy)
        self.tokenizers = load_tokenizers(policy)
        self.cache = CountCache()
        self.compaction = CompactionCodec(load_compaction_key(policy))
        self.metrics = metrics
        self.summary_writer = SummaryWriter(metrics)  # upstream/http summaries, off the hot path
        self._engine_down_until = 0.0
        self._estimated_models: set[str] = set()

    def choose(self, model: str | None, pack_header: str | None) -> tuple[Pack, WindowPolicy]:
        policy = policy_for(self.policies, model)
        return choose_pack(self.packs, pack_header, policy.pack), policy

    def shapes(self, model: str | None, pack_header: str | None) -> bool:
        """Whether anything but the full history with estimated counts can come out for this model: a pack,
        a trimming policy or a tokenizer. When not, callers may skip reading the history."""
        pack, policy = self.choose(model, pack_header)
        return not pack.empty or policy.trims or (model or "") in self.tokenizers

    def counter(
        self, model: str | None, policy: WindowPolicy, upstream: Upstream | None, *, exact: bool = False
    ) -> TokenCounter:
        """The model's tokenizer file; else, when a budget is enforced or `exact` asks for it (input_tokens),
        the engine's own count (a round trip per new item, so only when it matters); else the estimate."""
        name = model or ""
        tokenizer = self.tokenizers.get(name)
        if tokenizer is not None:
            return TokenCounter(TOKENIZER, name, self.cache, tokenizer=tokenizer)
        if (policy.max_input_tokens is not None or exact) and upstream is not None:

            async def engine(text: str) -> int | None:
                return await self._engine_count(upstream, name, text)

            return TokenCounter(ENGINE, name, self.cache, engine=engine)
        if name not in self._estimated_models:
            self._estimated_models.add(name)
            log.info("token counts for model %r are estimates (no tokenizer for it in the policy file)", name)
        return TokenCounter(ESTIMATE, name, self.cache)

    async def prompt(
        self,
        *,
        model: str | None,
        pack_header: str | None,
        upstream: Upstream | None,
        history: Sequence[bytes],
        new_input: Sequence[bytes] = (),
        instructions: str | None = None,
        request_tools: list[Any] | None = None,
        chat_tools: bool = False,
        truncation: str = "disabled",
        policy_override: WindowPolicy | None = None,
        tenant: str | None = None,
        exact: bool = False,
        store: Store | None = None,
        conversation_id: str | None = None,
        writable: bool = False,
        summaries_seen: dict[str, bytes | None] | None = None,
        summaries: Mapping[str, bytes] | None = None,
        history_param: str = "previous_response_id",
    ) -> Prompt:
        """With `tenant`, compaction items are verified and sent as their summaries (compaction.py); a
        caller that passes none leaves them as they are. With `store` and `conversation_id` too, an
        `upstream`/`http` policy folds with the stored summaries (summarisers.py): `summaries`, those the
        history's resolve brought (History.summaries), else read from the store; without, with the
        template's."""
        pack, policy = self.choose(model, pack_header)
        policy = policy_override or policy
        compacted: list[str] = []
        if tenant is not None:
            await self.compaction.ready_for([*history, *new_input])
            history, new_input, compacted = expand_compactions(
                self.compaction, tenant, history, new_input, history_param
            )
        stored = None
        if policy.summariser != TEMPLATE and store is not None and tenant is not None and conversation_id:
            stored = StoredSummaries(
                store,
                tenant,
                conversation_id,
                policy,
                writable=writable,
                seen=summaries_seen,
                resolved=summaries,
            )
        return await build_prompt(
            pack=pack,
            policy=policy,
            counter=self.counter(model, policy, upstream, exact=exact),
            history=history,
            new_input=new_input,
            instructions=instructions,
            request_tools=request_tools,
            chat_tools=chat_tools,
            truncation=truncation,
            compacted=compacted,
            stored=stored,
        )

    async def turn_prompt(
        self,
        conversation_id: str,
        *,
        model: str | None,
        pack_header: str | None,
        upstream: Upstream | None,
        history: Sequence[bytes],
        new_input: Sequence[bytes],
        instructions: str | None = None,
        request_tools: list[Any] | None = None,
        chat_tools: bool = False,
        truncation: str = "disabled",
        tenant: str | None = None,
        store: Store | None = None,
        stores_turn: bool = True,
        summaries: Mapping[str, bytes] | None = None,
        history_param: str = "previous_response_id",
    ) -> Prompt:
        """A turn's prompt, compared with the prompt of the history it continues (the previous turn's, to
        within its output's tokens): a new fingerprint is counted and logged, new summary blocks too.
        Blocks an `upstream`/`http` policy could not fold yet (no stored summary) are summarised in the
        background. A turn that is not stored (`store: false`) reads stored summaries but writes none."""
        common: dict[str, Any] = {
            "model": model,
            "pack_header": pack_header,
            "upstream": upstream,
            "instructions": instructions,
            "request_tools": request_tools,
            "chat_tools": chat_tools,
            "truncation": truncation,
            "tenant": tenant,
            "store": store,
            "conversation_id": conversation_id,
            "summaries_seen": {},  # both prompts read the stored summaries once
            "summaries": summaries,  # or not at all: the resolve brought them
            "history_param": history_param,
        }
        policy = self.choose(model, pack_header)[1]
        before = None
        if history and policy.trims:
            # First: a summary this turn's prompt stores (a fold the budget cannot defer) is a change.
            try:
                before = await self.prompt(history=history, **common)
            except Exception:  # the earlier turn's prompt is only compared with; this turn's stands
                before = None
        prompt = await self.prompt(history=history, new_input=new_input, writable=stores_turn, **common)
        if before is not None:
            self.note_change(conversation_id, before, prompt)
        if prompt.pending and stores_turn and store is not None and tenant is not None:
            self.summary_writer.schedule(
                prompt.pending,
                store=store,
                upstream=upstream,
                tenant=tenant,
                conversation_id=conversation_id,
                policy=policy,
                model=model,
            )
        return prompt

    def note_change(self, conversation_id: str, before: Prompt, after: Prompt) -> None:
        if before.fingerprint == after.fingerprint:
            return
        log.info(
            "prefix fingerprint changed %s -> %s (%d summarised turns)",
            before.fingerprint,
            after.fingerprint,
            after.summarised_turns,
            extra={"conversation_id": conversation_id},
        )
        if self.metrics is None:
            return
        self.metrics.apc_fingerprint_changes.inc()
        new_blocks = len(after.summaries) - len(before.summaries)
        # Blocks a turn folds itself are template summaries (an upstream/http summary is counted by the
        # writer that stores it; a turn folds one only once stored, in its prompt and the one before alike).
        if new_blocks > 0:
            self.metrics.summaries.labels(summariser="template").inc(new_blocks)
            self.metrics.summary_latency_ms.observe(after.summary_seconds * 1000)

    async def _engine_count(self, upstream: Upstream, model: str, text: str) -> int | None:
        """llama.cpp reads `content`, vLLM `prompt`; neither adds BOS with these flags. None when the
        engine cannot count (then the caller estimates, and the engine is left alone for a while)."""
        if time.monotonic() < self._engine_down_until:
            return None
        body: dict[str, Any] = {
            "content": text,
            "prompt": text,
            "add_special": False,
            "add_special_tokens": False,
        }
        if model:
            body["model"] = model
        count = _count_of(await upstream.ask("/tokenize", body, TOKENIZE_TIMEOUT))
        if count is None:
            log.warning("the engine's /tokenize did not count: token counts are estimates for now")
            self._engine_down_until = time.monotonic() + ENGINE_RETRY_SECONDS
        return count


def _count_of(answer: Any) -> int | None:
    if not isinstance(answer, dict):
        return None
    if isinstance(answer.get("count"), int):
        return int(answer["count"])
    tokens = answer.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def open_context_window(policy: Mapping[str, Any], metrics: Metrics | None = None) -> ContextWindow:
    """The app's context window; a policy it cannot serve stops start-up with one line naming the path."""
    from ..config import ConfigError

    try:
        return ContextWindow(policy, metrics)
    except (UnsupportedSummariser, TokenizerLoadError, CompactionKeyError) as exc:
        raise ConfigError(f"CONVOSTORE_CONFIG: {exc}") from None
