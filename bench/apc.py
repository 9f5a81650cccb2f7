"""`python -m bench apc [--quick]`: what the context window buys llama.cpp's prefix cache, measured.

llama.cpp (xllamacpp + Gemma 3 270M, one slot) behind a `convostore serve` on the memory store with its own
policy file; the openai SDK chains 14-20 turns per configuration and llama.cpp's own usage says how much of
each prompt came from its cache:

  (a) full history through the sidecar (the pack, nothing trimmed);
  (b) the pack plus trimming (`keep_last_turns: 4, summary_every_turns: 4`, a `max_input_tokens` budget);
  (c) a naive last-4-turns window that the client keeps and sends to the engine directly, for contrast.

prefix reuse = Σ min(cached_tokens, previous prompt tokens) / Σ previous prompt tokens, over turns 2..N.
Targets: (a) ≥ 0.95; (b) ≥ 0.85, the fingerprint changing only at folds, every prompt within the budget.
For (b) the reuse is split between folds and at folds, next to the ideal the design allows
(bench/apc_folds.py). `--swa-full` starts llama.cpp with the full sliding-window-attention cache (Gemma 3's
SWA layers otherwise keep only the last window, so a prompt that diverges earlier re-reads everything).
"""

from __future__ import annotations

import datetime
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from openai import OpenAI

from tests.fixtures.llamacpp import LlamaCppEngine
from tests.fixtures.sidecar_process import SidecarProcess

from .apc_folds import TurnCheck, check_turns, reuse_split, turn_prompt

PACK = "apc-bench"
FULL_MODEL = "apc-full"  # policies.default: the pack, the whole history
TRIM_MODEL = "apc-trim"  # policies.apc-trim: the pack, folding and a budget
KEEP_LAST_TURNS = 4
SUMMARY_EVERY_TURNS = 4
MAX_INPUT_TOKENS = 2560  # binds: the full history outgrows it by turn ~15, the trimmed prompt never
MAX_OUTPUT_TOKENS = 24  # bounds each turn's time: ~0.6 s of generation on 2 cores
TURNS = 18
QUICK_TURNS = 9  # one fold in (b)
TARGETS = {"full": 0.95, "trimmed": 0.85}
# The pack as a deployment writes one: house rules, then worked exemplars (~450 tokens on Gemma's vocabulary).
# It comes first in every prompt of every configuration, (c)'s included, so all three pay for the same bytes.
SYSTEM = (
    "You are the research assistant of a small maritime and local-history museum. Visitors ask the guides "
    "about objects in the galleries, and the guides ask you what to say. Answer in one short sentence, "
    "plainly, and never repeat the question. Lead with the single fact a visitor is most likely to remember: "
    "who made or used the object, where it came from, or what happened to it. Prefer dates and places from "
    "the curator's notes over general knowledge; when the notes are silent, say that the museum does not "
    "know rather than guess. Do not mention the storage rooms, the insurance values or the names of living "
    "donors. Use the present tense for what the object is and the past tense for its history. Keep "
    "technical words to one per answer, and explain it in passing when you use one. Never recommend "
    "touching an object, even when a visitor asks whether they may. If a question is about the building "
    "rather than the collection, answer that the front desk can help."
)
FEW_SHOT = [
    {
        "role": "user",
        "content": "A visitor asked about the ship's bell in the west gallery: where is it from?",
    },
    {
        "role": "assistant",
        "content": "It hung on the schooner Margaret Ann, which sailed from this harbour until 1912.",
    },
    {"role": "user", "content": "A child asked what the brass telescope by the window was for."},
    {
        "role": "assistant",
        "content": "The harbour pilot used it to read the flags of ships waiting outside the bar.",
    },
    {"role": "user", "content": "A visitor asked who painted the storm scene above the stairs."},
    {
        "role": "assistant",
        "content": "The museum does not know the painter; it came with the lifeboat station's desk in 1958.",
    },
]
TOPICS = [
    "the lighthouse keeper's logbooks",
    "a bronze astrolabe",
    "the herbarium of 1871",
    "a whaling ship's figurehead",
    "glass plate negatives",
    "the town's first telephone exchange",
    "a medieval charter",
    "the railway station clock",
    "a collection of sea shells",
    "the weaver's loom",
    "a fire brigade's brass helmet",
    "the apothecary's jars",
    "a printing press",
    "the harbour master's charts",
    "a schoolroom slate",
    "the windmill's millstones",
    "a diving helmet",
    "the organ pipes of the old church",
    "a pair of snow shoes",
    "the mayor's chain of office",
]


def question(turn: int) -> str:
    """A turn's user message: longer than a template summary's 200-character excerpt, so folding shrinks
    the prompt, and different on every turn, so nothing is cached by accident."""
    topic = TOPICS[(turn - 1) % len(TOPICS)]
    return (
        f"Visitor question {turn}, about {topic}: a visitor asked where {topic} came from, who used it, "
        f"and why the museum keeps it in the east gallery rather than in storage. The curator's notes say "
        f"it was donated by a family from the harbour district, restored twice, and lent to two other "
        f"museums. Which one fact should the guide say first about {topic}?"
    )


def policy_file() -> dict[str, Any]:
    return {
        "packs": {PACK: {"system": SYSTEM, "few_shot": FEW_SHOT}},
        "policies": {
            "default": {"pack": PACK},
            TRIM_MODEL: {
                "pack": PACK,
                "keep_last_turns": KEEP_LAST_TURNS,
                "summary_every_turns": SUMMARY_EVERY_TURNS,
                "max_input_tokens": MAX_INPUT_TOKENS,
            },
        },
    }


@dataclass
class Turn:
    prompt_tokens: int
    cached_tokens: int
    fingerprint: str | None
    seconds: float
    estimated_input_tokens: int | None = None  # X-Estimated-Input-Tokens: the sidecar's count
    response_id: str | None = None


@dataclass
class Run:
    name: str
    turns: list[Turn] = field(default_factory=list)

    @property
    def prefix_reuse(self) -> float:
        return prefix_reuse([t.prompt_tokens for t in self.turns], [t.cached_tokens for t in self.turns])

    @property
    def fingerprints(self) -> int | None:
        prints = [t.fingerprint for t in self.turns if t.fingerprint is not None]
        return len(set(prints)) if prints else None

    @property
    def fingerprint_changes_at(self) -> list[int]:
        """1-based turns whose fingerprint differs from the turn before."""
        prints = [t.fingerprint for t in self.turns]
        return [n + 1 for n in range(1, len(prints)) if prints[n] != prints[n - 1]]

    @property
    def largest_prompt(self) -> int:
        return max((t.prompt_tokens for t in self.turns), default=0)

    @property
    def largest_estimate(self) -> int | None:
        counts = [t.estimated_input_tokens for t in self.turns if t.estimated_input_tokens is not None]
        return max(counts) if counts else None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "turns": len(self.turns),
            "prefix_reuse": round(self.prefix_reuse, 3),
            "distinct_fingerprints": self.fingerprints,
            "fingerprint_changes_at": self.fingerprint_changes_at if self.fingerprints else None,
            "largest_prompt_tokens": self.largest_prompt,
            "largest_estimated_input_tokens": self.largest_estimate,
            "seconds": round(sum(t.seconds for t in self.turns), 1),
            "per_turn": [asdict(t) for t in self.turns],
        }


def prefix_reuse(prompt_tokens: list[int], cached_tokens: list[int]) -> float:
    """Σ min(cached_n, prompt_{n-1}) / Σ prompt_{n-1} over turns 2..N: how much of each earlier prompt
    the engine found in its cache (turn 1 has no earlier prompt)."""
    earlier = prompt_tokens[:-1]
    reused = [min(c, p) for c, p in zip(cached_tokens[1:], earlier, strict=True)]
    return sum(reused) / sum(earlier) if sum(earlier) else 0.0


def fold_turns(turns: int, keep: int = KEEP_LAST_TURNS, every: int = SUMMARY_EVERY_TURNS) -> list[int]:
    """The 1-based turns at which a policy folds a new summary block (docs/api.md §7): when the turns
    beyond the last `keep` complete another block of `every`."""
    folded = [max(0, n - keep) // every for n in range(1, turns + 1)]
    return [n + 1 for n in range(1, turns) if folded[n] != folded[n - 1]]


def _usage(answer: Any) -> tuple[int, int]:
    usage = answer.usage
    details = usage.input_tokens_details
    return usage.input_tokens, (details.cached_tokens if details is not None else 0) or 0


def chain_through_sidecar(client: OpenAI, model: str, turns: int, name: str, **params: Any) -> Run:
    """`turns` chained turns by `previous_response_id`: the sidecar resends (and folds) the history."""
    run = Run(name)
    previous: str | None = None
    for n in range(1, turns + 1):
        started = time.perf_counter()
        raw = client.responses.with_raw_response.create(
            model=model,
            input=question(n),
            previous_response_id=previous,
            temperature=0.0,
            max_output_tokens=MAX_OUTPUT_TOKENS,
            **params,
        )
        answer = raw.parse()
        prompt, cached = _usage(answer)
        fingerprint = raw.headers.get("X-Prefix-Fingerprint")
        estimated = raw.headers.get("X-Estimated-Input-Tokens")
        seconds = time.perf_counter() - started
        estimate = int(estimated) if estimated else None
        run.turns.append(Turn(prompt, cached, fingerprint, seconds, estimate, answer.id))
        previous = answer.id
    return run


def naive_window(engine: OpenAI, turns: int, keep: int = KEEP_LAST_TURNS) -> Run:
    """What a gateway with a sliding window does: the client keeps the history and sends the engine only
    the last `keep` turns with the new question, after the same system prompt and exemplars as the pack —
    every turn's prompt starts somewhere new after them."""
    run = Run("naive last-4 window (client, engine direct)")
    history: list[list[dict[str, Any]]] = []
    exemplars = [{"type": "message", **message} for message in FEW_SHOT]  # llama.cpp wants the type
    for n in range(1, turns + 1):
        user = {"type": "message", "role": "user", "content": question(n)}
        window = [message for turn in history[-keep:] for message in turn]
        started = time.perf_counter()
        answer = engine.responses.create(
            model=FULL_MODEL,
            instructions=SYSTEM,
            input=[*exemplars, *window, user],  # type: ignore[list-item]
            temperature=0.0,
            max_output_tokens=MAX_OUTPUT_TOKENS,
        )
        prompt, cached = _usage(answer)
        run.turns.append(Turn(prompt, cached, None, time.perf_counter() - started))
        said = {"type": "output_text", "text": answer.output_text, "annotations": []}
        history.append([user, {"type": "message", "role": "assistant", "content": [said]}])
    return run


@contextmanager
def apc_sidecar(engine_url: str) -> Iterator[SidecarProcess]:
    """`convostore serve` on the memory store with the benchmark's policy file, stopped by PID."""
    folder = Path(tempfile.mkdtemp(prefix="convostore-apc-"))
    policy = folder / "policy.yaml"
    policy.write_text(yaml.safe_dump(policy_file(), sort_keys=False))
    process = SidecarProcess(
        upstream=engine_url,
        upstream_api="responses",
        redis_url="memory://",
        extra_args=("--config", str(policy)),
    )
    try:
        yield process
    finally:
        process.close()
        policy.unlink(missing_ok=True)
        folder.rmdir()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": len(os.sched_getaffinity(0)), "cpu": cpu, "platform": platform.platform()}


def fold_checks(sidecar_url: str, engine_url: str, trimmed: Run, folds: list[int]) -> list[TurnCheck]:
    """(b)'s prompts rebuilt from the sidecar's resolve and the engine's template, turn against turn."""
    prompts = [turn_prompt(sidecar_url, engine_url, t.response_id or "", TRIM_MODEL) for t in trimmed.turns]
    counts = [t.prompt_tokens for t in trimmed.turns]
    cached = [t.cached_tokens for t in trimmed.turns]
    return check_turns(engine_url, prompts, counts, cached, folds)


def run(*, quick: bool, out: Path, turns: int | None = None, swa_full: bool = False) -> dict[str, Any]:
    turns = turns or (QUICK_TURNS if quick else TURNS)
    started = time.perf_counter()
    # One slot: every turn lands on the slot holding the previous prompt, as a busy server's affinity would.
    with (
        LlamaCppEngine(ctx=4096, parallel=1, swa_full=swa_full) as engine,
        apc_sidecar(engine.url) as sidecar,
    ):
        with OpenAI(base_url=f"{sidecar.url}/v1", api_key="none", timeout=120.0) as client:
            full = chain_through_sidecar(client, FULL_MODEL, turns, "full history (sidecar)")
            # "auto": should the count ever pass the budget, fold early rather than refuse (it shows as a
            # fingerprint change off the policy's schedule).
            trimmed = chain_through_sidecar(
                client, TRIM_MODEL, turns, "pack + trimming (sidecar)", truncation="auto"
            )
        checks = fold_checks(sidecar.url, engine.url, trimmed, fold_turns(turns))
        with OpenAI(base_url=f"{engine.url}/v1", api_key="none", timeout=120.0) as direct:
            naive = naive_window(direct, turns)
    results = {
        "benchmark": "apc",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": " ".join(
            ["python -m bench apc", *(["--quick"] if quick else []), *(["--swa-full"] if swa_full else [])]
        ),
        "engine": "llama.cpp (xllamacpp) + Gemma 3 270M Q4_K_M, 1 slot of 4096 tokens, n_cache_reuse 256"
        + (", swa_full" if swa_full else ""),
        "swa_full": swa_full,
        "load_average_at_end": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
        "policy": policy_file(),
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        "expected_folds_at": fold_turns(turns),
        "targets": TARGETS,
        "configurations": {
            "full": full.summary(),
            "trimmed": trimmed.summary(),
            "naive": naive.summary(),
        },
        "trimmed_reuse": reuse_split(checks),
        "trimmed_turns": [asdict(c) for c in checks],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(table(results))
    print(f"wrote {out}")
    return results


def table(results: dict[str, Any]) -> str:
    rows = [
        "| configuration | turns | prefix reuse | distinct fingerprints | largest prompt (tokens) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, config in results["configurations"].items():
        target = TARGETS.get(key)
        reuse = f"{config['prefix_reuse']:.3f}" + (f" (target ≥ {target})" if target else "")
        prints = config["distinct_fingerprints"]
        rows.append(
            f"| {config['name']} | {config['turns']} | {reuse} | "
            f"{'—' if prints is None else prints} | {config['largest_prompt_tokens']} |"
        )
    trimmed = results["configurations"]["trimmed"]
    rows.append(
        f"\nfolds expected at turns {results['expected_folds_at']}, fingerprint changed at "
        f"{trimmed['fingerprint_changes_at']}; budget max_input_tokens={MAX_INPUT_TOKENS}"
    )
    rows.append("\n(b) reuse | measured | ideal (common token prefix with the previous prompt)")
    for name, split in results["trimmed_reuse"].items():
        rows.append(f"{name} ({split['turns']} turns) | {split['measured']} | {split['ideal']}")
    rows.append("\nturn | fold | previous prompt | cached | ideal | bytes before block kept | its tokens")
    for c in results["trimmed_turns"]:
        rows.append(
            f"{c['turn']} | {'fold' if c['at_fold'] else ''} | {c['previous_prompt_tokens']} | "
            f"{c['cached_tokens']} | {c['common_prefix_tokens']} | {c['prefix_bytes_unchanged']} | "
            f"{c['tokens_before_new_block']} (rebuilt {c['rebuilt_prompt_tokens']} vs "
            f"engine {c['engine_prompt_tokens']})"
        )
        if c["differs_at_char"] is not None:
            rows.append(
                f"    texts differ at char {c['differs_at_char']} (new block at {c['new_block_at_char']}): "
                f"{c['previous_text_there']!r} became {c['new_text_there']!r}"
            )
    return "\n".join(rows)
