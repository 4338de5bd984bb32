"""OpenTelemetry from the worker, into OpenTelemetry's in-memory exporter: the SDK's spans
reach both the harness's database processor and OpenInference, carry the run's ids,
continue the request's trace, and hold no secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from opentelemetry import propagate
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import make_run
from execution.executor import run_execute
from harness_site import telemetry
from runs.models import Run, Span
from runs.tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-test-otel-0123456789abcdef"


@pytest.fixture
def exported(settings: Any) -> Iterator[InMemorySpanExporter]:
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    from execution.tracing import tracing_install

    exporter = InMemorySpanExporter()
    assert telemetry.telemetry_setup("worker", exporter=exporter)
    tracing_install()
    telemetry.telemetry_instrument_agents()
    try:
        yield exporter
    finally:
        OpenAIAgentsInstrumentor().uninstrument()
        telemetry.telemetry_shutdown()


def request_context() -> tuple[dict[str, str], str, str]:
    """A stand-in for the web's `POST /api/runs` span: its context as the run carries it."""
    assert telemetry._provider is not None
    with telemetry._provider.get_tracer("test").start_as_current_span("POST api/runs") as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        context = span.get_span_context()
    return carrier, format(context.trace_id, "032x"), format(context.span_id, "016x")


def attributes(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_both_processors_get_every_sdk_span_with_the_run_ids_in_the_requests_trace(exported, alice):
    carrier, trace_id, request_span_id = request_context()
    with FakeOpenAI(KEY) as fake, override_settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=fake.base_url):
        run = make_run(alice, model="gpt-5.4-mini", input="What is 6 * 7?", trace_context=carrier)
        assert run_execute(run.pk) == "succeeded"
    run = Run.objects.get(pk=run.pk)
    spans = [span for span in exported.get_finished_spans() if span.name != "POST api/runs"]
    by_id = {format(span.context.span_id, "016x"): span for span in spans}

    # One trace from request to result, and the run knows it.
    assert {format(span.context.trace_id, "032x") for span in spans} == {trace_id}
    assert run.otel_trace_id == trace_id
    run_span = next(span for span in spans if span.name == "harness.run")
    assert format(run_span.parent.span_id, "016x") == request_span_id
    assert attributes(run_span)["harness.status"] == "succeeded"

    # Every SDK span the database kept, OpenInference exported too (plus its trace's root).
    stored = Span.objects.filter(run=run)
    sdk_spans = [span for span in spans if span is not run_span]
    assert len(sdk_spans) == stored.count() + 1
    kinds = sorted(attributes(span).get("openinference.span.kind") for span in sdk_spans)
    assert kinds.count("LLM") == stored.filter(kind="response").count() == 2
    assert kinds.count("TOOL") == stored.filter(kind="function").count() == 1
    for span in sdk_spans:  # the tree hangs under the run's span
        parent = span.parent and by_id.get(format(span.parent.span_id, "016x"))
        assert parent, span.name

    # Filterable by run, session, agent and principal in Phoenix.
    for span in spans:
        attrs = attributes(span)
        assert attrs["session.id"] == run.session_id
        assert attrs["user.id"] == str(alice.user.pk)
        assert json.loads(attrs["metadata"])["run_id"] == run.pk
        assert json.loads(attrs["metadata"])["agent"] == "calculator"

    # Model calls carry the model and their token counts.
    llm = [span for span in sdk_spans if attributes(span).get("openinference.span.kind") == "LLM"]
    assert all(attributes(span)["llm.token_count.prompt"] == 11 for span in llm)
    assert all(attributes(span)["llm.token_count.completion"] == 7 for span in llm)
    tool = next(span for span in sdk_spans if attributes(span).get("openinference.span.kind") == "TOOL")
    assert tool.name == "calculate" and "6 * 7" in attributes(tool)["input.value"]


def test_exported_spans_are_redacted_and_hide_prompts_when_sensitive_data_is_off(settings, alice):
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    from execution.tracing import tracing_install

    secret_input = f"What is 6 * 7? my key is {KEY} and theirs is hk_{'a' * 40}"
    for sensitive in (True, False):
        exporter = InMemorySpanExporter()
        settings.HARNESS_TRACE_INCLUDE_SENSITIVE_DATA = sensitive
        telemetry.telemetry_setup("worker", exporter=exporter)
        tracing_install()
        telemetry.telemetry_instrument_agents()
        try:
            with FakeOpenAI(KEY) as fake, override_settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=fake.base_url):
                run = make_run(alice, model="gpt-5.4-mini", input=secret_input)
                assert run_execute(run.pk) == "succeeded"
        finally:
            OpenAIAgentsInstrumentor().uninstrument()
            telemetry.telemetry_shutdown()
        dumped = json.dumps([attributes(span) for span in exporter.get_finished_spans()])
        assert KEY not in dumped and "hk_aaaa" not in dumped
        if sensitive:
            assert "[REDACTED]" in dumped and "What is 6 * 7?" in dumped
        else:
            assert "What is 6 * 7?" not in dumped and "The tool said 42" not in dumped


def test_telemetry_is_off_without_an_otlp_endpoint(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not telemetry.telemetry_configured()
    assert not telemetry.telemetry_setup("web")
    assert telemetry.current_context() == {} and telemetry.current_ids() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert telemetry.telemetry_configured()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not telemetry.telemetry_configured()
