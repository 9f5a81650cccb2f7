"""What the context window allows llama.cpp to reuse, turn by turn, next to what it reused (bench/apc.py).

Each turn's prompt is rebuilt from the sidecar's own view — `GET /v1/sessions/resolve` of that turn's response
(the history as the proxy folds it) without the answer — and the engine's chat template and tokenizer
(`/apply-template`, `/tokenize` with BOS, as the engine counts). The ideal reuse of a turn is its prompt's
longest common token prefix with the previous prompt: between folds that is the whole previous prompt; at a
fold it is what comes before the new summary block (the pack and the earlier summaries), whose bytes the
design keeps unchanged.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

BLOCK_HEADING = "Summary of turn"  # template_summary's first line (sidecar/context/summarise.py)
EXCERPT = 24


@dataclass
class TurnPrompt:
    text: str
    tokens: list[int]


@dataclass
class TurnCheck:
    """One turn n ≥ 2 against turn n - 1."""

    turn: int
    at_fold: bool
    previous_prompt_tokens: int
    cached_tokens: int
    common_prefix_tokens: int  # the ideal: what the previous prompt and this one share, token by token
    rebuilt_prompt_tokens: int  # this prompt rebuilt here: the engine's count when the rebuild is right
    engine_prompt_tokens: int
    # At a fold: whether every byte before the new summary block was in the previous prompt, and how many
    # tokens those bytes are alone (a shorter common prefix means the join changed tokens at the boundary).
    prefix_bytes_unchanged: bool | None = None
    tokens_before_new_block: int | None = None
    # Where the two prompts' texts first differ, with a few characters of each from there (and the block's
    # own offset): the join between the earlier text and the new block shows up here.
    differs_at_char: int | None = None
    new_block_at_char: int | None = None
    previous_text_there: str | None = None
    new_text_there: str | None = None


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60.0) as resp:
        return orjson.loads(resp.read())


def _tokenize(engine_url: str, text: str) -> list[int]:
    answer = _post(f"{engine_url}/tokenize", {"content": text, "add_special": True, "parse_special": True})
    return [int(t) for t in answer["tokens"]]


def turn_prompt(sidecar_url: str, engine_url: str, response_id: str, model: str) -> TurnPrompt:
    """The prompt of the turn `response_id` answered: the resolved history up to its last user message."""
    query = urllib.parse.urlencode({"previous_response_id": response_id, "model": model})
    with urllib.request.urlopen(f"{sidecar_url}/v1/sessions/resolve?{query}", timeout=60.0) as resp:
        messages = orjson.loads(resp.read())["messages"]
    last_user = max(n for n, message in enumerate(messages) if message.get("role") == "user")
    text = _post(f"{engine_url}/apply-template", {"messages": messages[: last_user + 1]})["prompt"]
    return TurnPrompt(text, _tokenize(engine_url, text))


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def check_turns(
    engine_url: str,
    prompts: list[TurnPrompt],
    engine_counts: list[int],
    cached: list[int],
    folds: Sequence[int],
) -> list[TurnCheck]:
    checks = []
    for n in range(1, len(prompts)):
        before, now = prompts[n - 1], prompts[n]
        check = TurnCheck(
            turn=n + 1,
            at_fold=n + 1 in folds,
            previous_prompt_tokens=engine_counts[n - 1],
            cached_tokens=cached[n],
            common_prefix_tokens=common_prefix(before.tokens, now.tokens),
            rebuilt_prompt_tokens=len(now.tokens),
            engine_prompt_tokens=engine_counts[n],
        )
        block = now.text.rfind(BLOCK_HEADING)
        if check.at_fold and block >= 0:
            differs = common_prefix(before.text, now.text)
            check.prefix_bytes_unchanged = differs >= block
            check.tokens_before_new_block = len(_tokenize(engine_url, now.text[:block]))
            check.differs_at_char, check.new_block_at_char = differs, block
            check.previous_text_there = before.text[differs : differs + EXCERPT]
            check.new_text_there = now.text[differs : differs + EXCERPT]
        checks.append(check)
    return checks


def reuse_split(checks: list[TurnCheck]) -> dict[str, Any]:
    """Measured and ideal reuse between folds, at folds and overall (Σ min(·, previous) / Σ previous)."""

    def ratio(selected: list[TurnCheck], field: str) -> float | None:
        earlier = sum(c.previous_prompt_tokens for c in selected)
        got = sum(min(getattr(c, field), c.previous_prompt_tokens) for c in selected)
        return round(got / earlier, 3) if earlier else None

    groups = {
        "between_folds": [c for c in checks if not c.at_fold],
        "at_folds": [c for c in checks if c.at_fold],
        "overall": checks,
    }
    return {
        name: {
            "turns": len(selected),
            "measured": ratio(selected, "cached_tokens"),
            "ideal": ratio(selected, "common_prefix_tokens"),
        }
        for name, selected in groups.items()
    }
