"""OpenTelemetry: on when an OTLP endpoint is configured, off (and never imported) otherwise.

Configured by the standard variables, read by the OpenTelemetry SDK itself:
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), OTEL_EXPORTER_OTLP_HEADERS,
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*;
OTEL_SDK_DISABLED=true turns it off. Phoenix files spans under the project named by
PHOENIX_PROJECT_NAME (default: the service name).

- The web process records a server span per HTTP request (opentelemetry-instrumentation-django,
  also on the API's own handler) and hands its context to the run (`Run.trace_context`).
- The worker continues that trace: a `harness.run` span per run, under which the Agents SDK's
  spans arrive through OpenInference (beside the harness's own database processor, never
  instead of it), each carrying the run, session, agent and principal.
- Every exported attribute goes through the same redaction as logs; prompts and outputs are
  exported only with HARNESS_TRACE_INCLUDE_SENSITIVE_DATA, as for stored spans.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

_provider: TracerProvider | None = None
DEFAULT_SERVICE_NAME = "agent-harness"


def telemetry_configured() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def telemetry_enabled() -> bool:
    return _provider is not None


def telemetry_setup(role: str, *, exporter: SpanExporter | None = None) -> bool:
    """Install the tracer provider for this process (`web` or `worker`), once. False when off.
    `exporter` replaces the OTLP exporter (tests: an in-memory one, exported span by span)."""
    global _provider
    if _provider is not None:
        return True
    if exporter is None and not telemetry_configured():
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attributes: dict[str, Any] = {"harness.role": role}
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip()
    if not service and "service.name=" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        service = attributes["service.name"] = DEFAULT_SERVICE_NAME
    attributes["openinference.project.name"] = (
        os.environ.get("PHOENIX_PROJECT_NAME", "").strip() or service or DEFAULT_SERVICE_NAME
    )
    provider = TracerProvider(resource=Resource.create(attributes))
    from harness_site.otel_export import RedactingExporter

    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(RedactingExporter(OTLPSpanExporter())))
    else:
        provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(exporter)))
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    _provider = provider
    logger.info("telemetry on", extra={"role": role, "project": attributes["openinference.project.name"]})
    return True


def telemetry_instrument_django() -> None:
    """HTTP server spans for Django's handler (admin, pages) and, through
    `api_middleware`, for the API's own handler. Call before the ASGI app is built."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    instrumentor = DjangoInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=_provider)


def telemetry_instrument_agents() -> None:
    """OpenInference spans for the Agents SDK, added beside the harness's processor."""
    if _provider is None:
        return
    from django.conf import settings
    from openinference.instrumentation import TraceConfig
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    hide = not settings.HARNESS_TRACE_INCLUDE_SENSITIVE_DATA
    config = TraceConfig(
        hide_inputs=hide,
        hide_outputs=hide,
        hide_input_messages=hide,
        hide_output_messages=hide,
        hide_input_text=hide,
        hide_output_text=hide,
    )
    instrumentor = OpenAIAgentsInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        # exclusive_processor=True (its default) would remove the harness's own processor.
        instrumentor.instrument(tracer_provider=_provider, exclusive_processor=False, config=config)


def telemetry_flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def telemetry_shutdown() -> None:
    """Export what is still batched and stop; telemetry is off in this process afterwards."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def current_context() -> dict[str, str]:
    """The current trace context as W3C headers (traceparent), to continue it elsewhere."""
    if _provider is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span in hex, when one is recording."""
    if _provider is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def set_current_attributes(**attributes: Any) -> None:
    """Add attributes to the current span (the request's, say), if one is recording."""
    if _provider is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({key: value for key, value in attributes.items() if value is not None})


class RunSpan:
    """The handle of a run's span: its trace id, and how the run ended."""

    def __init__(self, span: Any = None) -> None:
        self.span = span
        self.trace_id = format(span.get_span_context().trace_id, "032x") if span is not None else ""

    def finish(self, *, status: str, error: str, cost_usd: Any, usage: dict[str, Any] | None) -> None:
        if self.span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        from harness_site.redaction import redact

        usage = usage or {}
        if cost_usd is not None:
            self.span.set_attribute("harness.cost_usd", float(cost_usd))
        self.span.set_attributes(
            {
                "harness.status": status,
                "harness.unpriced": cost_usd is None,
                "llm.token_count.prompt": int(usage.get("input_tokens") or 0),
                "llm.token_count.completion": int(usage.get("output_tokens") or 0),
                "llm.token_count.total": int(usage.get("total_tokens") or 0),
            }
        )
        if status == "failed":
            self.span.set_status(Status(StatusCode.ERROR, redact(error)[:500]))


@contextmanager
def run_span(
    *, run_id: str, session_id: str, agent: str, model: str, principal: str, carrier: dict[str, str]
) -> Iterator[RunSpan]:
    """The span of one run's execution, continuing the trace of the request that made it.
    Every span started inside (the SDK's, through OpenInference) carries the run's ids
    as `session.id`, `user.id` and `metadata`."""
    if _provider is None:
        yield RunSpan()
        return
    from openinference.instrumentation import using_attributes
    from opentelemetry import propagate

    tracer = _provider.get_tracer("harness.execution")
    metadata = {"run_id": run_id, "agent": agent, "model": model, "principal": principal}
    with (
        tracer.start_as_current_span(
            "harness.run",
            context=propagate.extract(carrier or {}),
            attributes={
                "openinference.span.kind": "CHAIN",
                "harness.run_id": run_id,
                "harness.agent": agent,
                "metadata": json.dumps(metadata),
                "session.id": session_id,
                "user.id": principal,
                "llm.model_name": model,
            },
        ) as span,
        using_attributes(session_id=session_id, user_id=principal, metadata=metadata, tags=[agent]),
    ):
        yield RunSpan(span)


class ApiTelemetryMiddleware:
    """The Django instrumentation's server span for the API's own (async) handler: its
    request and response steps are plain CPU work, so they run here without a thread hop."""

    def __init__(self, get_response: Any) -> None:
        from asgiref.sync import markcoroutinefunction
        from opentelemetry.instrumentation.django.middleware.otel_middleware import _DjangoMiddleware

        self.get_response = get_response
        self.otel = _DjangoMiddleware(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request: Any) -> Any:
        self.otel.process_request(request)
        try:
            response = await self.get_response(request)
        except Exception as exc:
            self.otel.process_exception(request, exc)
            raise
        return self.otel.process_response(request, response)
