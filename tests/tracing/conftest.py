"""The in-process sidecar and fake engine, and an OpenTelemetry SDK provider whose spans stay in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import engine, make_sidecar

__all__ = ["engine", "make_sidecar"]  # the fixtures, imported so pytest finds them here


@pytest.fixture(scope="session")
def span_exporter() -> Iterator[object]:
    """One global SDK TracerProvider for the session (OpenTelemetry lets it be set once per process); the
    sidecar uses an installed provider as it is, so its spans land in this exporter."""
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.clear()


@pytest.fixture
def spans(span_exporter: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Tracing switched on for the sidecars this test makes; the exporter emptied before and after."""
    monkeypatch.setenv("CONVOSTORE_TRACING", "otel")
    span_exporter.clear()  # type: ignore[attr-defined]
    yield span_exporter
    span_exporter.clear()  # type: ignore[attr-defined]
