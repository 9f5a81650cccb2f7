"""Per-model window policies (docs/api.md §7, §9): the request's `model` picks `policies.<model>`, else
`policies.default`, else no trimming at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_SUMMARY_EVERY_TURNS = 4
# `template` is deterministic: its summaries are pure functions of the history, nothing stored. `upstream`
# (the engine) and `http` (an endpoint) write summaries in the background and store them (summarisers.py).
SERVED_SUMMARISERS = ("template", "upstream", "http")


class UnsupportedSummariser(ValueError):
    """A policy's summariser cannot be served (an unknown name, an unusable URL); the message names its
    path."""


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    name: str = ""
    keep_last_turns: int | None = None  # None: no folding by turns
    summary_every_turns: int = DEFAULT_SUMMARY_EVERY_TURNS
    max_input_tokens: int | None = None  # None: no budget
    summariser: str = "template"
    summariser_url: str | None = None  # for `http`
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
                f"policies.{name}.summariser: must be one of {', '.join(SERVED_SUMMARISERS)}, "
                f"not {summariser!r}"
            )
        url = spec.get("summariser_url")
        if summariser == "http" and not str(url or "").startswith(("http://", "https://")):
            raise UnsupportedSummariser(
                f"policies.{name}.summariser_url: an http:// or https:// URL, not {url!r}"
            )
        policies[name] = WindowPolicy(
            name=name,
            keep_last_turns=spec.get("keep_last_turns"),
            summary_every_turns=spec.get("summary_every_turns") or DEFAULT_SUMMARY_EVERY_TURNS,
            max_input_tokens=spec.get("max_input_tokens"),
            summariser=summariser,
            summariser_url=url if summariser == "http" else None,
            pack=spec.get("pack"),
        )
    return policies


def policy_for(policies: Mapping[str, WindowPolicy], model: str | None) -> WindowPolicy:
    if model and model in policies:
        return policies[model]
    return policies.get("default", NO_POLICY)
