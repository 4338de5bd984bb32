"""What the admin's run and session pages show, assembled from the stored rows.

Pure functions turn rows into what a person reads: `transcript(events)` (text deltas folded
into their message, each tool call with its result), `span_tree(spans)` (the SDK's parent
ids as a tree, on a millisecond waterfall) and `sandbox_commands(entries)`. The loaders
`run_page` and `session_page` read each table once, bounded by HARNESS_CONSOLE_MAX_ROWS, so
a page costs the same number of queries however many events or spans a run has.

What counts as a tool error is decided here once (`is_tool_error`, `tool_error_runs`): the
run page highlights it and the run list filters on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from runs import events as kinds
from runs.models import Run, RunEvent, Session, Span

# --- Tool errors: the one rule ------------------------------------------------------

# A tool result that starts with one of these (any case) is an error: the registry's tools
# answer "error: ..." (the calculator's "error: division by zero"), and the SDK answers
# "An error occurred while running the tool ..." when a tool raised.
TOOL_ERROR_PREFIXES = ("error", "an error occurred")


def is_tool_error(output: Any, span_error: Any = None) -> bool:
    """A tool call failed: its function span recorded an error, or its result says so."""
    if span_error:
        return True
    return isinstance(output, str) and output.lower().startswith(TOOL_ERROR_PREFIXES)


def tool_error_runs() -> Q:
    """The same rule as a filter on runs: a tool.output event that is an error, or a
    function span with an error."""
    output_is_error = Q()
    for prefix in TOOL_ERROR_PREFIXES:
        output_is_error |= Q(data__output__istartswith=prefix)
    errored_output = RunEvent.objects.filter(output_is_error, run=OuterRef("pk"), type=kinds.TOOL_OUTPUT)
    failed_span = Span.objects.filter(run=OuterRef("pk"), kind="function", error__isnull=False)
    return Q(Exists(errored_output)) | Q(Exists(failed_span))


def called_tool_runs(name: str) -> Q:
    """Runs that called the tool `name` (their tool.called events: written live, so a
    running run counts too)."""
    return Q(Exists(RunEvent.objects.filter(run=OuterRef("pk"), type=kinds.TOOL_CALLED, data__name=name)))


def tool_names_seen(limit: int = 100) -> list[str]:
    """The tool names a filter offers: every published agent's tools, and those function
    spans recorded (a tool since removed), at most `limit` of them."""
    from runs.published import published_agents

    names = {name for agent in published_agents().values() for name in agent.tools}
    seen = Span.objects.filter(kind="function").exclude(name="").order_by().values_list("name", flat=True)
    names.update(seen.distinct()[:limit])
    return sorted(names)[:limit]


# --- Display helpers -----------------------------------------------------------------


def preview_limit() -> int:
    return int(settings.HARNESS_CONSOLE_PREVIEW_CHARS)


def pretty(value: Any) -> str:
    """A stored value as text to read: JSON (also JSON inside a string) indented, text as is."""
    if value is None:
        return ""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "["):
            try:
                return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False)
            except ValueError:
                return value
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def compact(value: Any) -> str:
    """A stored value on one line (a tool call's arguments): JSON without spaces to spare."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass
class Clipped:
    """A text cut for the page: `shown`, and how many characters were left out."""

    shown: str
    omitted: int = 0

    @classmethod
    def of(cls, text: str, limit: int | None = None) -> Clipped:
        limit = preview_limit() if limit is None else limit
        if len(text) <= limit:
            return cls(text)
        return cls(text[:limit], len(text) - limit)

    def __str__(self) -> str:
        return self.shown


# --- The transcript ---------------------------------------------------------------------


@dataclass
class Entry:
    """One line of a run's conversation. `event_type` names the event(s) it stands for."""

    kind: str  # input | assistant | tool | agent | handoff | sandbox | note | final | event
    event_type: str
    seq: int = 0
    text: str = ""
    name: str = ""
    call_id: str = ""
    arguments: str = ""
    output: str | None = None
    truncated: bool = False
    error: bool = False
    partial: bool = False
    deltas: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def who(self) -> str:
        return WHO.get(self.kind, self.kind)

    @property
    def text_preview(self) -> Clipped:
        return Clipped.of(self.text)

    @property
    def output_preview(self) -> Clipped:
        return Clipped.of(self.output or "")


WHO = {"input": "user", "final": "run"}
FINAL_STATUS = {kinds.SUCCEEDED: "succeeded", kinds.FAILED: "failed", kinds.CANCELLED: "cancelled"}


def transcript(events: list[RunEvent], *, run_input: str = "", agent: str = "") -> list[Entry]:
    """The conversation of a run from its events, in order.

    1. The input opens it.
    2. Text deltas gather into the message they stream; the message.created event that
       completes it replaces them (one entry, never one per delta). Deltas no message
       completed (a run cancelled mid-answer, or still running) become a partial message.
    3. A tool call and its result (paired by call id) are one entry; a result is an error
       by `is_tool_error`.
    4. Agent changes, handoffs, sandbox start/stop, requeues, budget stops and the final
       status are short lines; an event type this page does not know is shown as its data.
    """
    entries: list[Entry] = [Entry(kind="input", event_type="input", text=run_input)]
    tools: dict[str, Entry] = {}
    current_agent = agent
    pending: Entry | None = None

    def flush(partial: bool) -> None:
        nonlocal pending
        if pending is not None:
            pending.partial = partial
            entries.append(pending)
            pending = None

    for event in sorted(events, key=lambda e: e.seq):
        data = event.data if isinstance(event.data, dict) else {}
        kind = event.type
        if kind == kinds.TEXT_DELTA:
            if pending is None:
                pending = Entry(kind="assistant", event_type=kinds.TEXT_DELTA, seq=event.seq)
            pending.text += str(data.get("text") or "")
            pending.deltas += 1
            pending.truncated = pending.truncated or bool(data.get("truncated"))
        elif kind == kinds.MESSAGE:
            deltas = pending.deltas if pending is not None else 0
            pending = None
            entries.append(
                Entry(
                    kind="assistant",
                    event_type=kinds.MESSAGE,
                    seq=event.seq,
                    text=str(data.get("text") or ""),
                    truncated=bool(data.get("truncated")),
                    deltas=deltas,
                )
            )
        elif kind == kinds.TOOL_CALLED:
            entry = Entry(
                kind="tool",
                event_type=kinds.TOOL_CALLED,
                seq=event.seq,
                name=str(data.get("name") or "tool"),
                call_id=str(data.get("call_id") or ""),
                arguments=compact(data.get("arguments")),
            )
            tools[entry.call_id] = entry
            entries.append(entry)
        elif kind == kinds.TOOL_OUTPUT:
            call_id = str(data.get("call_id") or "")
            called = tools.pop(call_id, None) if call_id else None
            if called is not None:
                entry = called
                entry.event_type = f"{kinds.TOOL_CALLED} → {kinds.TOOL_OUTPUT}"
            else:
                entry = Entry(
                    kind="tool", event_type=kinds.TOOL_OUTPUT, seq=event.seq, name=str(data.get("name") or "tool")
                )
                entries.append(entry)
            entry.output = str(data.get("output") if data.get("output") is not None else "")
            entry.truncated = bool(data.get("truncated"))
            entry.error = is_tool_error(entry.output)
        elif kind == kinds.AGENT_UPDATED:
            name = str(data.get("agent") or "")
            if name and name != current_agent:
                entries.append(Entry(kind="agent", event_type=kind, seq=event.seq, name=name))
            current_agent = name or current_agent
        elif kind == kinds.HANDOFF:
            name = str(data.get("agent") or "")
            if data.get("to"):
                name = f"{data.get('from') or name} → {data['to']}"
            entries.append(Entry(kind="handoff", event_type=kind, seq=event.seq, name=name, data=data))
        elif kind in (kinds.SANDBOX_STARTED, kinds.SANDBOX_STOPPED):
            entries.append(Entry(kind="sandbox", event_type=kind, seq=event.seq, data=data))
        elif kind == kinds.REQUEUED:
            entries.append(Entry(kind="note", event_type=kind, seq=event.seq, text=str(data.get("reason") or "")))
        elif kind == kinds.STARTED:
            attempt = int(data.get("attempt") or 1)
            if attempt > 1:
                entries.append(Entry(kind="note", event_type=kind, seq=event.seq, text=f"attempt {attempt}"))
        elif kind == kinds.QUEUED:
            continue
        elif kind == kinds.BUDGET_EXCEEDED:
            facts = {key: value for key, value in data.items() if key != "limit"}
            text = f"limit {data.get('limit') or '?'} reached" + (f": {compact(facts)}" if facts else "")
            entries.append(Entry(kind="note", event_type=kind, seq=event.seq, text=text, error=True, data=data))
        elif kind == kinds.GUARDRAIL_TRIPPED:
            text = f"{data.get('kind') or '?'} guardrail {data.get('guardrail') or '?'} tripped"
            entries.append(Entry(kind="note", event_type=kind, seq=event.seq, text=text, error=True, data=data))
        elif kind in FINAL_STATUS:
            flush(partial=True)
            status = FINAL_STATUS[kind]
            entries.append(
                Entry(
                    kind="final",
                    event_type=kind,
                    seq=event.seq,
                    name=status,
                    text=str(data.get("error") or ""),
                    error=status == "failed",
                    data=data,
                )
            )
        else:
            entries.append(Entry(kind="event", event_type=kind, seq=event.seq, text=compact(data), data=data))
    flush(partial=True)
    return entries


# --- Sandbox commands ------------------------------------------------------------------

_EXIT = re.compile(r"^Process exited with code (-?\d+)$", re.MULTILINE)
_RUNNING = re.compile(r"^Process running with session ID (\d+)$", re.MULTILINE)
_WALL = re.compile(r"^Wall time: ([0-9.]+) seconds$", re.MULTILINE)
_OUTPUT_HEADER = "\nOutput:\n"
SHELL_TOOLS = ("exec_command", "write_stdin")


@dataclass
class Command:
    """One shell command a sandbox ran: what, how it exited, what it printed."""

    cmd: str
    exit_code: int | None = None
    wall_seconds: float = 0.0
    output: str = ""
    running: bool = False
    session_id: int | None = None
    seq: int = 0

    @property
    def failed(self) -> bool:
        return self.exit_code not in (None, 0)

    @property
    def output_preview(self) -> Clipped:
        return Clipped.of(self.output)


def _number[N: (int, float)](value: Any, kind: type[N], default: N) -> N:
    """`value` as a number of `kind`, or `default`: a model's tool arguments are whatever it sent."""
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _shell_result(text: str) -> tuple[int | None, int | None, float, str]:
    """exit code, running session id, wall time and output of a shell tool's result."""
    header, separator, output = text.partition(_OUTPUT_HEADER)
    if not separator:
        header, output = text, ""
    exit_match, running_match, wall = _EXIT.search(header), _RUNNING.search(header), _WALL.search(header)
    return (
        int(exit_match.group(1)) if exit_match else None,
        int(running_match.group(1)) if running_match else None,
        _number(wall.group(1), float, 0.0) if wall else 0.0,
        output,
    )


def sandbox_commands(entries: list[Entry]) -> list[Command]:
    """The commands of a sandbox run, from its exec_command/write_stdin calls and results.

    A command still running when exec_command returned ("Process running with session ID
    N") is followed by write_stdin polls of session N: their output and exit code are the
    same command's."""
    commands: list[Command] = []
    running: dict[int, Command] = {}
    for entry in entries:
        if entry.kind != "tool" or entry.name not in SHELL_TOOLS:
            continue
        try:
            arguments = json.loads(entry.arguments) if entry.arguments else {}
        except ValueError:
            arguments = {}
        if not isinstance(arguments, dict):
            arguments = {}
        exit_code, session_id, wall, output = _shell_result(entry.output or "")
        if entry.name == "write_stdin":
            command = running.get(_number(arguments.get("session_id"), int, -1))
            if command is None:
                command = Command(cmd=f"(input to session {arguments.get('session_id')})", seq=entry.seq)
                commands.append(command)
            chars = str(arguments.get("chars") or "")
            if chars:
                command.output += f"\n[stdin] {chars}"
        else:
            command = Command(cmd=str(arguments.get("cmd") or entry.arguments), seq=entry.seq)
            commands.append(command)
        command.output += output
        command.wall_seconds += wall
        command.exit_code = exit_code if exit_code is not None else command.exit_code
        if session_id is not None:
            command.running, command.session_id = True, session_id
            running[session_id] = command
        elif command.session_id is not None and exit_code is not None:
            command.running = False
            running.pop(command.session_id, None)
    return commands


# --- The trace: tree and waterfall ---------------------------------------------------------


@dataclass
class SpanRow:
    """One span in tree order, placed on the waterfall (percentages of the trace's length)."""

    span: Span
    depth: int
    offset_ms: float
    duration_ms: float
    left_pct: float
    width_pct: float
    error: bool
    children: int = 0

    @property
    def label(self) -> str:
        return self.span.name or self.span.kind

    @property
    def kind(self) -> str:
        """The SDK's span type; a custom span by its own name (task, turn, sandbox.*)."""
        return self.span.name if self.span.kind == "custom" and self.span.name else self.span.kind

    @property
    def style(self) -> str:
        """The bar's place on the axis (inline CSS: no stylesheet knows each span)."""
        return f"left:{self.left_pct:.3f}%;width:{self.width_pct:.3f}%"

    @property
    def indent(self) -> str:
        return f"padding-left:{self.depth * 14}px"

    @property
    def offset(self) -> str:
        return format_ms(self.offset_ms)

    @property
    def duration(self) -> str:
        return format_ms(self.duration_ms)

    @property
    def detail(self) -> SpanDetail:
        return span_detail(self.span, tool_error=self.error and not self.span.error)


@dataclass
class Waterfall:
    rows: list[SpanRow]
    total_ms: float
    ticks: list[tuple[str, str]]  # (CSS left, label)

    @property
    def total(self) -> str:
        return format_ms(self.total_ms)


def _ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


def _nice_step(total_ms: float, ticks: int = 5) -> float:
    """A round tick interval (1, 2 or 5 times a power of ten) giving about `ticks` ticks."""
    raw = max(total_ms / ticks, 1e-3)
    power = 10 ** int(f"{raw:e}".split("e")[1])
    for multiple in (1, 2, 5, 10):
        if raw <= multiple * power:
            return float(multiple * power)
    return float(10 * power)


def format_ms(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 1:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def span_is_error(span: Span) -> bool:
    """A failed span, or a tool (function span) whose result is an error."""
    if span.error:
        return True
    data = span.data if isinstance(span.data, dict) else {}
    return span.kind == "function" and is_tool_error(data.get("output"))


def span_tree(spans: list[Span]) -> Waterfall:
    """Spans as a tree (parent_id -> children, siblings by start) in depth-first order, each
    placed on one millisecond axis that starts at the trace's first span.

    A span whose parent is not among `spans` is a root; a cycle is cut where it closes."""
    by_id = {span.id: span for span in spans}
    children: dict[str, list[Span]] = {}
    roots: list[Span] = []
    for span in spans:
        if span.parent_id and span.parent_id in by_id and span.parent_id != span.id:
            children.setdefault(span.parent_id, []).append(span)
        else:
            roots.append(span)

    def start_key(span: Span) -> tuple[int, float, str]:
        return (0, span.started_at.timestamp(), span.id) if span.started_at else (1, 0.0, span.id)

    starts = [span.started_at for span in spans if span.started_at]
    ends = [end for span in spans if (end := span.ended_at or span.started_at) is not None]
    origin = min(starts) if starts else None
    total_ms = max(_ms(max(ends), origin), 0.0) if origin and ends else 0.0
    scale = total_ms if total_ms > 0 else 1.0
    rows: list[SpanRow] = []
    seen: set[str] = set()

    def visit(span: Span, depth: int) -> None:
        if span.id in seen:
            return
        seen.add(span.id)
        kids = sorted(children.get(span.id, []), key=start_key)
        offset = _ms(span.started_at, origin) if span.started_at and origin else 0.0
        if span.duration_ms is not None:
            duration = float(span.duration_ms)
        elif span.started_at and span.ended_at:
            duration = _ms(span.ended_at, span.started_at)
        else:
            duration = 0.0
        left = min(max(offset / scale * 100, 0.0), 100.0)
        width = min(max(duration / scale * 100, 0.4), 100.0 - left) if left < 100 else 0.4
        rows.append(SpanRow(span, depth, offset, duration, left, width, span_is_error(span), len(kids)))
        for kid in kids:
            visit(kid, depth + 1)

    for root in sorted(roots, key=start_key):
        visit(root, 0)
    for span in sorted(spans, key=start_key):  # what a cycle left unreached
        visit(span, 0)
    step = _nice_step(total_ms) if total_ms > 0 else 0.0
    ticks: list[tuple[str, str]] = []
    if step:
        index = 0
        while index * step <= total_ms + 1e-9:
            value = index * step
            ticks.append((f"left:{value / scale * 100:.3f}%", format_ms(value) if value else "0"))
            index += 1
    return Waterfall(rows=rows, total_ms=total_ms, ticks=ticks)


@dataclass
class SpanDetail:
    """What a click on a span shows."""

    input: Clipped
    output: Clipped
    usage: str
    cost_usd: Decimal | None
    error: str
    other: Clipped
    tool_error: bool


def span_detail(span: Span, *, tool_error: bool = False) -> SpanDetail:
    """A span's input and output (from its data, by kind), usage, cost, error and the rest."""
    data = dict(span.data) if isinstance(span.data, dict) else {}
    data.pop("type", None)
    if span.kind == "custom" and isinstance(data.get("data"), dict):
        data = {**{k: v for k, v in data.items() if k != "data"}, **data["data"]}
    input_value, output_value = data.pop("input", None), data.pop("output", None)
    data.pop("usage", None)
    rest = {key: value for key, value in data.items() if value not in (None, [], {}, "")}
    return SpanDetail(
        input=Clipped.of(pretty(input_value)),
        output=Clipped.of(pretty(output_value)),
        usage=compact(span.usage) if span.usage else "",
        cost_usd=span.cost_usd,
        error=pretty(span.error) if span.error else "",
        other=Clipped.of(pretty(rest) if rest else ""),
        tool_error=tool_error,
    )


# --- Loaders: one query per table, bounded --------------------------------------------------


@dataclass
class Bounded:
    """Rows of one kind for a page, and whether there were more than it shows."""

    rows: list[Any]
    more: bool

    @classmethod
    def of(cls, queryset: QuerySet[Any], limit: int) -> Bounded:
        rows = list(queryset[: limit + 1])
        return cls(rows[:limit], len(rows) > limit)


@dataclass
class AuditRow:
    entry: Any  # audit.models.AuditLog
    data: str


@dataclass
class ArtifactRow:
    artifact: Any  # artifacts.models.Artifact
    download_url: str  # a fresh short-lived URL; "" while it is not ready


@dataclass
class RunPage:
    run: Run
    entries: list[Entry]
    events_more: bool
    waterfall: Waterfall
    spans_more: bool
    commands: list[Command]
    sandboxes: list[Any]
    artifacts: list[ArtifactRow]
    audit: list[AuditRow]
    audit_more: bool
    retries: list[Run]
    limit: int

    @property
    def tool_errors(self) -> int:
        return sum(1 for entry in self.entries if entry.kind == "tool" and entry.error)

    @property
    def failed_spans(self) -> int:
        return sum(1 for row in self.waterfall.rows if row.error)


def run_events(run: Run, limit: int) -> Bounded:
    """The events a page needs, in two bounded queries: every event but the text deltas, and
    the deltas after the last completed message (the only ones a message does not hold)."""
    others = Bounded.of(run.events.exclude(type=kinds.TEXT_DELTA).order_by("seq"), limit)
    last_message = RunEvent.objects.filter(run=run, type=kinds.MESSAGE).order_by("-seq").values("seq")[:1]
    trailing = Bounded.of(
        run.events.filter(type=kinds.TEXT_DELTA, seq__gt=Coalesce(Subquery(last_message), 0)).order_by("seq"),
        limit,
    )
    return Bounded(sorted([*others.rows, *trailing.rows], key=lambda e: e.seq), others.more or trailing.more)


def run_page(run: Run) -> RunPage:
    """Everything the run page shows, in a fixed number of queries whatever the run's size.

    The run comes with its owner, session and retry_of (select_related)."""
    from artifacts.models import Artifact
    from artifacts.services import artifact_download_url
    from audit.models import AuditLog

    limit = int(settings.HARNESS_CONSOLE_MAX_ROWS)
    events = run_events(run, limit)
    entries = transcript(events.rows, run_input=run.input, agent=run.agent)
    spans = Bounded.of(run.spans.order_by("started_at", "id"), limit)
    audit = Bounded.of(
        AuditLog.objects.filter(Q(run_id=run.pk) | Q(target_type="run", target_id=run.pk)).order_by("id"), limit
    )
    artifacts = [
        ArtifactRow(a, artifact_download_url(artifact=a) if a.status == Artifact.Status.READY else "")
        for a in Artifact.objects.filter(run=run).order_by("created_at", "id")
    ]
    return RunPage(
        run=run,
        entries=entries,
        events_more=events.more,
        waterfall=span_tree(spans.rows),
        spans_more=spans.more,
        commands=sandbox_commands(entries),
        sandboxes=list(run.sandboxes.order_by("id")),
        artifacts=artifacts,
        audit=[AuditRow(entry, compact(entry.data) if entry.data else "") for entry in audit.rows],
        audit_more=audit.more,
        retries=list(run.retries.order_by("id").only("id", "status", "created_at")),
        limit=limit,
    )


# --- Sessions ---------------------------------------------------------------------------------


@dataclass
class Turn:
    """One run of a session as a turn of its conversation."""

    run: Run
    tools: list[Entry]

    @property
    def input_preview(self) -> Clipped:
        return Clipped.of(self.run.input)

    @property
    def output_preview(self) -> Clipped:
        return Clipped.of(self.run.output or "")


@dataclass
class SessionPage:
    session: Session
    turns: list[Turn]
    more: bool


def session_page(session: Session) -> SessionPage:
    """A session's runs in order, each with its input, output and tool calls (two queries)."""
    limit = int(settings.HARNESS_CONSOLE_MAX_ROWS)
    runs = Bounded.of(
        Run.objects.filter(session=session)
        .order_by("created_at", "id")
        .only("id", "status", "agent", "model", "input", "output", "error", "created_at", "session_id"),
        limit,
    )
    run_ids = [run.pk for run in runs.rows]
    tool_events = (
        RunEvent.objects.filter(run_id__in=run_ids, type__in=(kinds.TOOL_CALLED, kinds.TOOL_OUTPUT))
        .order_by("run_id", "seq")
        .only("run_id", "seq", "type", "data")
    )
    by_run: dict[str, list[RunEvent]] = {}
    for event in tool_events[:limit]:
        by_run.setdefault(event.run_id, []).append(event)
    turns = [
        Turn(run=run, tools=[e for e in transcript(by_run.get(run.pk, [])) if e.kind == "tool"]) for run in runs.rows
    ]
    return SessionPage(session=session, turns=turns, more=runs.more)
