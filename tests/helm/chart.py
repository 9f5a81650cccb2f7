"""Render helm/convostore offline with the real Helm library (helm-python-sdk) and look things up in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "convostore"
RELEASE, NAMESPACE = "demo", "models"


def render(values: dict[str, Any] | None = None) -> Manifests:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [
        doc
        for path, text in sorted(files.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    notes = next((text for path, text in files.items() if path.endswith("NOTES.txt")), "")
    return Manifests(docs, notes)


def lint(values: dict[str, Any] | None = None) -> list[str]:
    """Findings of `helm lint --strict` worse than info ("icon is recommended")."""
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + list(
        report["errors"]
    )


class Manifests:
    def __init__(self, docs: list[dict[str, Any]], notes: str) -> None:
        self.docs = docs
        self.notes = notes

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [
            d
            for d in self.all(kind)
            if component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        [found] = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        return found


def container(deployment: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def env(container_spec: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_spec.get("env", [])}
