"""Prometheus metrics (CONTRACT §8) and the structured request log."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp.test_utils import TestServer

from sidecar.logs import JsonFormatter


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name) and (f"{{{wanted}}}" in line if wanted else line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_resolves_conflicts_and_engine_timing(
    engine: TestServer, make_sidecar: Any
) -> None:
    sidecar = await make_sidecar(upstream=str(engine.make_url("")).rstrip("/"), redis_url="memory://")
    first = await (await sidecar.post("/v1/responses", json={"model": "m", "input": "hi"})).json()
    await sidecar.post(
        "/v1/responses", json={"model": "m", "input": "again", "previous_response_id": first["id"]}
    )
    await sidecar.post("/v1/sessions/c1/append", json={"role": "user", "content": "x"})
    conflict = await sidecar.post(
        "/v1/sessions/c1/append", json={"role": "user", "content": "y"}, headers={"If-Match": "9"}
    )
    assert conflict.status == 409
    resp = await sidecar.get("/convostore/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    assert sample(text, "convostore_requests_total", route="/v1/responses", status="200") == 2
    assert (
        sample(text, "convostore_requests_total", route="/v1/sessions/{conversation_id}/append", status="409")
        == 1
    )
    assert sample(text, "convostore_resolve_latency_ms_count") == 1  # the chained turn's one resolve
    assert sample(text, "convostore_append_conflicts_total") == 1
    assert sample(text, "convostore_upstream_first_byte_ms_count") == 2
    assert sample(text, "convostore_proxy_overhead_ms_count") == 2
    assert sample(text, "convostore_session_size_bytes_count") == 3
    assert sample(text, "convostore_estimated_input_tokens_count") == 1
    assert sample(text, "convostore_prefix_reuse_ratio_count") == 2
    assert sample(text, "convostore_store_errors_total") == 0


async def test_failed_requests_are_logged_as_json_with_ids(
    engine: TestServer, make_sidecar: Any, caplog: Any
) -> None:
    sidecar = await make_sidecar(upstream=str(engine.make_url("")).rstrip("/"), redis_url="memory://")
    with caplog.at_level(logging.INFO, logger="convostore"):
        resp = await sidecar.get("/v1/responses/resp_unknown", headers={"X-Request-Id": "req-123"})
    assert resp.status == 404
    [record] = [r for r in caplog.records if getattr(r, "route", None) == "/v1/responses/{response_id}"]
    line = orjson.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-123" and line["status"] == 404 and line["tenant"] == "default"
    assert line["level"] == "info" and "duration_ms" in line
    assert "content" not in line and "input" not in line  # never message content
