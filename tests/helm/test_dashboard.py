"""The Grafana dashboard asks only for series a running sidecar really exports, with labels it really has."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.fake_engine import create_fake_engine
from tests.fixtures.sidecar_process import SidecarProcess

DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "convostore" / "dashboards" / "convostore.json"
# Labels Prometheus adds when it scrapes a target (ServiceMonitor / pod discovery), not the sidecar's own.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "service", "endpoint"}
_METRIC = re.compile(r"\bconvostore_[A-Za-z0-9_:]+")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def queries(node: Any) -> Iterator[str]:
    """Every PromQL string in the dashboard: panel targets and templating queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            is_promql = key in ("expr", "definition") or (key == "query" and "convostore_" in str(value))
            if is_promql and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for value in node:
            yield from queries(value)


@pytest.fixture
async def engine() -> AsyncIterator[TestServer]:
    server = TestServer(create_fake_engine())
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def sidecar(engine: TestServer, tmp_path: Path) -> AsyncIterator[SidecarProcess]:
    policy = tmp_path / "policy.yaml"  # a rate limit this traffic reaches, for the quota panel
    policy.write_text("tenants:\n  default:\n    quota: {requests_per_minute: 10}\n")
    process = SidecarProcess(
        upstream=str(engine.make_url("")).rstrip("/"),
        upstream_api="responses",
        redis_url="memory://",
        extra_args=("--config", str(policy)),
    )
    try:
        yield process
    finally:
        process.close()


def test_the_dashboard_is_grafana_json_with_the_promised_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "convostore" and dashboard["schemaVersion"] >= 36
    titles = {p["title"] for p in dashboard["panels"] if p["type"] != "row"}
    promised = {"Requests by route and status", "Resolve latency", "Proxy overhead", "Engine first byte"}
    promised |= {
        "Session size",
        "Estimated input tokens",
        "Prefix reuse ratio",
        "Append conflicts",
        "Store errors",
    }
    assert promised <= titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace"}


async def test_every_queried_series_and_label_is_exported_after_traffic(sidecar: SidecarProcess) -> None:
    async with aiohttp.ClientSession(sidecar.url) as http:
        first = await (await http.post("/v1/responses", json={"model": "m", "input": "hi"})).json()
        chained = await http.post(
            "/v1/responses", json={"model": "m", "input": "again", "previous_response_id": first["id"]}
        )
        assert chained.status == 200
        second = await chained.json()
        await http.post(
            "/v1/responses", json={"model": "m", "input": "more", "previous_response_id": second["id"]}
        )
        assert (
            await http.post("/v1/sessions/c1/append", json={"role": "user", "content": "x"})
        ).status == 200
        conflict = await http.post(
            "/v1/sessions/c1/append", json={"role": "user", "content": "y"}, headers={"If-Match": "9"}
        )
        assert conflict.status == 409
        assert (await http.get("/v1/sessions/resolve", params={"conversation_id": "c1"})).status == 200
        statuses = [(await http.get("/v1/models")).status for _ in range(10)]
        assert 429 in statuses
        text = await (await http.get("/convostore/metrics")).text()

    samples: dict[str, set[str]] = {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
            values[sample.name] = values.get(sample.name, 0.0) + sample.value

    used = sorted(
        {name for query in queries(json.loads(DASHBOARD.read_text())) for name in _METRIC.findall(query)}
    )
    assert used, "the dashboard queries no convostore_ metric"
    missing = [name for name in used if name not in samples]
    assert not missing, f"queried but not exported: {missing}; exported: {sorted(samples)}"
    for name in used:
        if name.endswith("_bucket"):
            assert "le" in samples[name]
        # The histograms the panels show were all fed by this traffic (no panel on a series never observed).
        base = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        if base + "_count" in samples and base != name:
            assert values[base + "_count"] > 0, f"{base} saw no observation"
    assert values["convostore_append_conflicts_total"] == 1

    for query in queries(json.loads(DASHBOARD.read_text())):
        series = set(_METRIC.findall(query))
        known = set().union(*(samples[name] for name in series)) | {"le"} | TARGET_LABELS
        labels = {
            label.strip() for group in _BY.findall(query) for label in group.split(",") if label.strip()
        }
        labels |= set(_MATCHER.findall(query))
        assert labels <= known, f"{query}: labels {sorted(labels - known)} are not on {sorted(series)}"
