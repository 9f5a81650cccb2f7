"""Trace context on every request, and OpenTelemetry spans for the server, the resolve, the engine call and
the store write, checked with the SDK's in-memory exporter against the in-process sidecar and fake engine."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from sidecar.config import ConfigError
from sidecar.logs import JsonFormatter
from sidecar.tracing import Tracing, build_provider, parse_traceparent
from tests.fixtures.fake_engine import recorded

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CLIENT_SPAN}-01"


def engine_url(engine: TestServer) -> str:
    return str(engine.make_url("")).rstrip("/")


async def sidecar_on(make_sidecar: Any, engine: TestServer, backend: str, request: Any) -> Any:
    if backend == "memory":
        return await make_sidecar(upstream=engine_url(engine), redis_url="memory://")
    return await make_sidecar(
        upstream=engine_url(engine), redis_url=request.getfixturevalue("redis_server").url
    )


async def first_turn(sidecar: Any) -> str:
    resp = await sidecar.post("/v1/responses", json={"model": "m", "input": "hello"})
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["id"])


def request_log(caplog: Any, route: str = "/v1/responses") -> dict[str, Any]:
    records = [r for r in caplog.records if getattr(r, "route", None) == route]
    return dict(orjson.loads(JsonFormatter().format(records[-1])))


def engine_trace(engine: TestServer) -> tuple[str | None, str | None]:
    headers = {k.lower(): v for k, v in recorded(engine.app, "/v1/responses")[-1]["headers"].items()}
    return headers.get("traceparent"), headers.get("tracestate")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_chained_turn_has_server_resolve_engine_and_store_spans_in_the_clients_trace(
    spans: Any, engine: TestServer, make_sidecar: Any, caplog: Any, request: Any, backend: str, stream: bool
) -> None:
    sidecar = await sidecar_on(make_sidecar, engine, backend, request)
    previous = await first_turn(sidecar)
    spans.clear()
    body = {"model": "m", "input": "again", "previous_response_id": previous, "stream": stream}
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=opaque"}
    with caplog.at_level(logging.DEBUG, logger="convostore"):
        resp = await sidecar.post("/v1/responses", json=body, headers=headers)
        assert resp.status == 200
        await resp.read()

    finished = [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == TRACE]
    by_name = {s.name: s for s in finished}
    server = by_name["POST /v1/responses"]
    assert server.kind.name == "SERVER"
    assert server.parent is not None and format(server.parent.span_id, "016x") == CLIENT_SPAN
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["convostore.response_id"] == resp.headers["X-Response-Id"]
    for name in ("store begin_turn", "engine POST /v1/responses", "store append_turn"):
        child = by_name[name]
        assert child.kind.name == "CLIENT"
        assert child.parent is not None and child.parent.span_id == server.context.span_id, name
    assert by_name["store begin_turn"].attributes["db.system.name"] == backend
    assert by_name["store append_turn"].end_time <= server.end_time

    traceparent, tracestate = engine_trace(engine)
    engine_span = by_name["engine POST /v1/responses"]
    assert traceparent == f"00-{TRACE}-{format(engine_span.context.span_id, '016x')}-01"
    assert tracestate == "vendor=opaque"
    assert request_log(caplog)["trace_id"] == TRACE


async def test_without_a_traceparent_the_server_span_is_a_new_root_the_engine_and_log_share(
    spans: Any, engine: TestServer, make_sidecar: Any, caplog: Any
) -> None:
    sidecar = await make_sidecar(upstream=engine_url(engine), redis_url="memory://")
    with caplog.at_level(logging.DEBUG, logger="convostore"):
        resp = await sidecar.post("/v1/responses", json={"model": "m", "input": "hi"})
        assert resp.status == 200
    [server] = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"]
    assert server.parent is None
    trace_id = format(server.context.trace_id, "032x")
    traceparent, tracestate = engine_trace(engine)
    assert parse_traceparent(traceparent) is not None and traceparent.split("-")[1] == trace_id
    assert tracestate is None
    assert request_log(caplog)["trace_id"] == trace_id
    # A new conversation needs no resolve: the store's only call is the write.
    assert {s.name for s in spans.get_finished_spans()} == {
        "POST /v1/responses",
        "engine POST /v1/responses",
        "store append_turn",
    }


async def test_a_failing_engine_call_marks_its_span_and_the_server_span_as_errors(
    spans: Any, make_sidecar: Any
) -> None:
    sidecar = await make_sidecar(redis_url="memory://")  # nothing listens on the engine's port
    resp = await sidecar.post(
        "/v1/responses", json={"model": "m", "input": "hi"}, headers={"traceparent": TRACEPARENT}
    )
    assert resp.status == 502
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["engine POST /v1/responses"].status.status_code.name == "ERROR"
    assert by_name["POST /v1/responses"].status.status_code.name == "ERROR"
    assert by_name["POST /v1/responses"].attributes["http.response.status_code"] == 502


async def test_tracing_off_passes_a_valid_trace_on_mints_for_an_invalid_one_and_exports_nothing(
    span_exporter: Any, engine: TestServer, make_sidecar: Any, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOSTORE_TRACING", "off")
    span_exporter.clear()
    sidecar = await make_sidecar(upstream=engine_url(engine), redis_url="memory://")
    with caplog.at_level(logging.DEBUG, logger="convostore"):
        headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=opaque"}
        assert (
            await sidecar.post("/v1/responses", json={"model": "m", "input": "a"}, headers=headers)
        ).status == 200
    assert engine_trace(engine) == (TRACEPARENT, "vendor=opaque")  # not a participant: passed on as it came
    assert request_log(caplog)["trace_id"] == TRACE

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="convostore"):
        headers = {"traceparent": "00-abc-def-01", "tracestate": "vendor=opaque"}
        assert (
            await sidecar.post("/v1/responses", json={"model": "m", "input": "b"}, headers=headers)
        ).status == 200
    traceparent, tracestate = engine_trace(engine)
    parsed = parse_traceparent(traceparent)
    assert parsed is not None and parsed[2] == "01" and tracestate is None  # W3C: no tracestate without it
    assert request_log(caplog)["trace_id"] == parsed[0]
    assert span_exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT,
        f"cc-{TRACE}-{CLIENT_SPAN}-01-what-the-future-adds",  # a later version: its first four fields count
        f" {TRACEPARENT} ",
    ],
)
def test_valid_traceparents_are_accepted(value: str) -> None:
    assert parse_traceparent(value) == (TRACE, CLIENT_SPAN, "01")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "00-abc-def-01",
        f"ff-{TRACE}-{CLIENT_SPAN}-01",  # version ff is forbidden
        f"00-{'0' * 32}-{CLIENT_SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE.upper()}-{CLIENT_SPAN}-01",  # lowercase hex only
        f"00-{TRACE}-{CLIENT_SPAN}-01-extra",  # version 00 has exactly four fields
    ],
)
def test_invalid_traceparents_are_refused(value: str | None) -> None:
    assert parse_traceparent(value) is None


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_SERVICE_NAME": "gw"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "CONVOSTORE_TRACING": "off"}, False),
        ({"CONVOSTORE_TRACING": "otel"}, True),
        ({"CONVOSTORE_TRACING": "otel", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_switched_by_the_standard_otel_variables(env: dict[str, str], enabled: bool) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    assert Tracing.from_env(env).enabled is enabled


def test_a_bad_setting_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigError, match="CONVOSTORE_TRACING='yes'"):
        Tracing.from_env({"CONVOSTORE_TRACING": "yes"})


def test_an_unknown_exporter_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    monkeypatch.setattr("sidecar.tracing._installed_provider", lambda: None)
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER: no span exporter named 'jaegerish'"):
        Tracing.from_env({"OTEL_TRACES_EXPORTER": "console,jaegerish"})


def test_without_the_sdk_auto_stays_off_and_otel_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    for name in [m for m in sys.modules if m.startswith("opentelemetry.sdk")] + ["opentelemetry.sdk"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import` of a None entry raises ImportError
    with caplog.at_level(logging.WARNING, logger="convostore"):
        assert Tracing.from_env({"OTEL_SERVICE_NAME": "gw"}).enabled is False
    assert "opentelemetry-sdk is not installed" in caplog.text
    with pytest.raises(ConfigError, match=r"convostore\[otel\]"):
        Tracing.from_env({"CONVOSTORE_TRACING": "otel"})


def test_a_provider_of_our_own_is_named_convostore_unless_the_environment_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = build_provider(("console",))
    try:
        assert provider.resource.attributes["service.name"] == "convostore"
    finally:
        provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-7")
    provider = build_provider(())
    try:
        assert provider.resource.attributes["service.name"] == "gateway-7"
    finally:
        provider.shutdown()
