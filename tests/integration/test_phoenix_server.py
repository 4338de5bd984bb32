"""A real Phoenix server receives OpenTelemetry spans over OTLP/HTTP and gives them back."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.integration.phoenix import PhoenixServer

# Not `phoenix`: arize-phoenix-client's pytest plugin owns that marker (it records marked tests as Phoenix experiments).
pytestmark = [pytest.mark.integration, pytest.mark.needs_phoenix]


def test_spans_round_trip(phoenix_server: PhoenixServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The exporter is configured the way the harness will be: OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", phoenix_server.otlp_endpoint)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    project = f"harness-test-{uuid.uuid4().hex[:10]}"
    provider = TracerProvider(
        resource=Resource.create({"service.name": "harness-tests", "openinference.project.name": project})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("tests")
    try:
        with tracer.start_as_current_span("parent") as parent:
            with tracer.start_as_current_span("child") as child:
                child.set_attribute("harness.answer", 42)
        assert provider.force_flush(timeout_millis=10_000)
    finally:
        provider.shutdown()

    trace_id = format(parent.get_span_context().trace_id, "032x")
    spans = phoenix_server.spans(project, wait_for=lambda spans: len(spans) >= 2, timeout=30)
    by_name = {span["name"]: span for span in spans}
    assert set(by_name) == {"parent", "child"}
    assert {span["context"]["trace_id"] for span in spans} == {trace_id}
    assert by_name["parent"]["context"]["span_id"] == format(parent.get_span_context().span_id, "016x")
    assert by_name["child"]["context"]["span_id"] == format(child.get_span_context().span_id, "016x")
    assert by_name["parent"].get("parent_id") is None
    assert by_name["child"]["parent_id"] == by_name["parent"]["context"]["span_id"]
    assert by_name["child"]["attributes"]["harness.answer"] == 42
