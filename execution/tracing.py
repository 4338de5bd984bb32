"""Capture the SDK's traces and spans so they can be stored with their run.

The processor runs inside the SDK's event loop, where the ORM may not be used,
so it only buffers exported spans in memory; the run executor takes its trace's
buffer when the run ends and writes it with the outcome (one batch per run).
It replaces the SDK's OpenAI uploader unless HARNESS_OPENAI_TRACING opts in.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents import TracingProcessor, add_trace_processor, set_trace_processors
from django.conf import settings

from billing.pricing import TokenUsage, call_cost
from harness_site.redaction import redact_data
from runs.models import Span, Trace

MAX_PENDING_TRACES = 1000


@dataclass
class TraceBuffer:
    export: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None = None
    spans: list[dict[str, Any]] = field(default_factory=list)


class HarnessTracingProcessor(TracingProcessor):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traces: OrderedDict[str, TraceBuffer] = OrderedDict()

    def on_trace_start(self, trace: Any) -> None:
        export = trace.export()
        if export is None:
            return
        with self._lock:
            self._traces[trace.trace_id] = TraceBuffer(export=export, started_at=_now())
            while len(self._traces) > MAX_PENDING_TRACES:
                self._traces.popitem(last=False)

    def on_trace_end(self, trace: Any) -> None:
        with self._lock:
            buffer = self._traces.get(trace.trace_id)
            if buffer is not None:
                buffer.ended_at = _now()

    def on_span_start(self, span: Any) -> None:
        pass

    def on_span_end(self, span: Any) -> None:
        export = span.export()
        if export is None:
            return
        with self._lock:
            buffer = self._traces.get(span.trace_id)
            if buffer is not None:
                buffer.spans.append(export)

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass

    def pop(self, trace_id: str) -> TraceBuffer | None:
        with self._lock:
            return self._traces.pop(trace_id, None)


processor = HarnessTracingProcessor()
_installed = False


def tracing_install() -> None:
    """Route SDK traces to the harness, and to OpenTelemetry when it is on (once per process)."""
    global _installed
    if _installed:
        return
    from harness_site.telemetry import telemetry_instrument_agents

    if settings.HARNESS_OPENAI_TRACING:
        add_trace_processor(processor)
    else:
        set_trace_processors([processor])
    # After ours: OpenInference's processor joins it (a later set_trace_processors would drop it).
    telemetry_instrument_agents()
    _installed = True


def _now() -> datetime:
    from django.utils import timezone

    return timezone.now()


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _span_name(data: dict[str, Any]) -> str:
    name = data.get("name") or data.get("model") or data.get("to_agent") or ""
    if data.get("type") == "response" and not name:
        name = data.get("response_id") or ""
    return str(name)[:200]


def _span_usage(data: dict[str, Any]) -> dict[str, Any] | None:
    usage = data.get("usage")
    if usage is None and isinstance(data.get("data"), dict):
        usage = data["data"].get("usage")
    return usage if isinstance(usage, dict) else None


def trace_rows(buffer: TraceBuffer, *, run_id: str, model: str = "") -> tuple[Trace, list[Span]]:
    """The trace and its spans as rows; a model call's span is priced from its usage."""
    export = buffer.export
    trace = Trace(
        id=export["id"],
        run_id=run_id,
        workflow_name=str(export.get("workflow_name") or "")[:200],
        group_id=str(export.get("group_id") or "")[:64],
        metadata=redact_data(export.get("metadata") or {}),
        started_at=buffer.started_at,
        ended_at=buffer.ended_at,
    )
    spans = []
    for item in buffer.spans:
        data = item.get("span_data") or {}
        started, ended = _parse(item.get("started_at")), _parse(item.get("ended_at"))
        usage = _span_usage(data)
        kind = str(data.get("type") or "unknown")[:32]
        cost = call_cost(model, TokenUsage.of(usage)) if usage and kind in ("response", "generation") else None
        spans.append(
            Span(
                id=item["id"],
                trace_id=trace.id,
                run_id=run_id,
                parent_id=item.get("parent_id") or "",
                kind=kind,
                name=_span_name(data),
                started_at=started,
                ended_at=ended,
                duration_ms=round((ended - started).total_seconds() * 1000, 3) if started and ended else None,
                usage=usage,
                cost_usd=cost,
                data=redact_data(data),
                error=redact_data(item.get("error")),
            )
        )
    return trace, spans
