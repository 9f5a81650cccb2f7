"""What the context window buys llama.cpp's prefix cache, end to end (bench/apc.py's code, fewer turns): the
openai SDK chains turns through a sidecar (memory store, the benchmark's policy file) in front of the real
engine, and llama.cpp's own `cached_tokens` say how much of each earlier prompt it reused.

(a) the full history: every turn's prompt extends the one before, so nearly all of it is reused;
(b) a pack and trimming (`keep_last_turns: 4, summary_every_turns: 4`, a budget): between folds the prompt
only grows at its end; a fold re-sends everything after the earlier summaries (Gemma 3's sliding-window
layers leave llama.cpp nothing to reuse there), once per 4 turns. 11 turns hold one fold and the 3 turns
after it; `python -m bench apc` measures 18 (README).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from bench.apc import (
    FULL_MODEL,
    MAX_INPUT_TOKENS,
    TRIM_MODEL,
    apc_sidecar,
    chain_through_sidecar,
    fold_turns,
)
from tests.fixtures.llamacpp import LlamaCppEngine
from tests.fixtures.sidecar_process import SidecarProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def apc_client(llamacpp_engine: LlamaCppEngine) -> Iterator[OpenAI]:
    with apc_sidecar(llamacpp_engine.url) as sidecar, sdk(sidecar) as client:
        yield client


def sdk(sidecar: SidecarProcess) -> OpenAI:
    return OpenAI(base_url=f"{sidecar.url}/v1", api_key="none", timeout=120.0)


def test_the_full_history_reuses_the_previous_prompt(apc_client: OpenAI) -> None:
    run = chain_through_sidecar(apc_client, FULL_MODEL, 14, "full history")
    assert run.prefix_reuse >= 0.95, run.summary()
    assert run.fingerprints == 1  # the pack's prefix, the same on every turn
    prompts = [turn.prompt_tokens for turn in run.turns]
    assert prompts == sorted(prompts) and len(set(prompts)) == len(prompts)  # the engine got it all


def test_trimming_keeps_the_cache_warm_between_folds(apc_client: OpenAI) -> None:
    turns = 11
    run = chain_through_sidecar(apc_client, TRIM_MODEL, turns, "pack + trimming", truncation="auto")
    assert run.prefix_reuse >= 0.80, run.summary()
    # The prefix fingerprint changes at the policy's folds and nowhere else.
    assert run.fingerprint_changes_at == fold_turns(turns) == [8], run.summary()
    # Between folds each turn reuses the turn before it nearly whole.
    for n, turn in enumerate(run.turns[1:], start=2):
        if n not in fold_turns(turns):
            assert turn.cached_tokens >= 0.95 * run.turns[n - 2].prompt_tokens, (n, run.summary())
    # The fold shrank the prompt, and the sidecar's count of it stayed within the budget.
    fold = run.turns[7]
    assert fold.prompt_tokens < run.turns[6].prompt_tokens
    assert all((turn.estimated_input_tokens or 0) <= MAX_INPUT_TOKENS for turn in run.turns)
