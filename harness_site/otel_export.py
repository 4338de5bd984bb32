"""The span exporter wrapper that keeps secrets out of exported telemetry (imported only
when telemetry is on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from harness_site.redaction import redact


class RedactingExporter(SpanExporter):
    """Passes spans on with every string attribute (and event attribute) redacted."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([_redacted(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _redact_attributes(attributes: Any) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if isinstance(value, str):
            cleaned[key] = redact(value)
        elif isinstance(value, tuple | list):
            cleaned[key] = tuple(redact(item) if isinstance(item, str) else item for item in value)
        else:
            cleaned[key] = value
    return cleaned


def _redacted(span: ReadableSpan) -> ReadableSpan:
    """A copy of the span with its attributes, events and status message redacted."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_redact_attributes(span.attributes),
        events=[
            Event(event.name, _redact_attributes(event.attributes), event.timestamp)  # type: ignore[arg-type]
            for event in span.events
        ],
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code, redact(span.status.description or "") or None),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
