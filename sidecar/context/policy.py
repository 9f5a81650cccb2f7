"""Per-model window policies (docs/api.md §7, §9): the request's `model` picks `policies.<model>`, else
`policies.default`, else no trimming at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_SUMMARY_EVERY_TURNS = 4
# The only summariser served: deterministic, so folds and summaries are pure functions of the history and
# every replica sends the same bytes with nothing stored. `upstream` and `http` stop start-up (load_policies).
SERVED_SUMMARISERS = ("template",)


class UnsupportedSummariser(ValueError):
    """A policy names a summariser this version does not serve; the message names its path."""


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    name: str = ""
    keep_last_turns: int | None = None  # None: no folding by turns
    summary_every_turns: int = DEFAULT_SUMMARY_EVERY_TURNS
    max_input_tokens: int | None = None  # None: no budget
    summariser: str = "template"
    pack: str | None = None

    @property
    def trims(self) -> bool:
        """Whether this policy can change what the engine receives (else it gets the full history)."""
        return self.keep_last_turns is not None or self.max_input_tokens is not None


NO_POLICY = WindowPolicy()


def load_policies(policy: Mapping[str, Any]) -> dict[str, WindowPolicy]:
    policies = {}
    for name, spec in (policy.get("policies") or {}).items():
        spec = spec or {}
        summariser = spec.get("summariser") or "template"
        if summariser not in SERVED_SUMMARISERS:
            raise UnsupportedSummariser(
                f"policies.{name}.summariser: {summariser!r} is not supported yet; use 'template' "
                "(deterministic summaries, no model call)"
            )
        policies[name] = WindowPolicy(
            name=name,
            keep_last_turns=spec.get("keep_last_turns"),
            summary_every_turns=spec.get("summary_every_turns") or DEFAULT_SUMMARY_EVERY_TURNS,
            max_input_tokens=spec.get("max_input_tokens"),
            summariser=summariser,
            pack=spec.get("pack"),
        )
    return policies


def policy_for(policies: Mapping[str, WindowPolicy], model: str | None) -> WindowPolicy:
    if model and model in policies:
        return policies[model]
    return policies.get("default", NO_POLICY)
