"""The run page's data (runs/console.py): transcript, tool errors, span tree, sandbox commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runs import console
from runs.models import RunEvent, Span

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def events(*items: tuple[str, dict[str, Any]]) -> list[RunEvent]:
    return [RunEvent(seq=seq, type=kind, data=data) for seq, (kind, data) in enumerate(items, start=1)]


def span(span_id: str, parent: str = "", *, start_ms: float, ms: float, kind: str = "function", **fields: Any) -> Span:
    started = T0 + timedelta(milliseconds=start_ms)
    return Span(
        id=span_id,
        parent_id=parent,
        kind=kind,
        name=fields.pop("name", span_id),
        started_at=started,
        ended_at=started + timedelta(milliseconds=ms),
        duration_ms=ms,
        **fields,
    )


# --- transcript -----------------------------------------------------------------------------


def test_text_deltas_fold_into_the_message_they_stream():
    deltas = [("text.delta", {"text": word}) for word in ("6 ", "* ", "7 ", "= ", "42")]
    entries = console.transcript(
        events(
            ("run.queued", {}), ("run.started", {"attempt": 1}), *deltas, ("message.created", {"text": "6 * 7 = 42"})
        ),
        run_input="What is 6 * 7?",
    )
    assert [e.kind for e in entries] == ["input", "assistant"]
    assert entries[0].text == "What is 6 * 7?"
    assert entries[1].text == "6 * 7 = 42" and entries[1].deltas == 5 and not entries[1].partial


def test_deltas_no_message_completed_are_one_partial_message():
    entries = console.transcript(
        events(
            ("text.delta", {"text": "half "}), ("text.delta", {"text": "an answer"}), ("run.cancelled", {"error": "x"})
        )
    )
    assistant = entries[1]
    assert assistant.kind == "assistant" and assistant.text == "half an answer" and assistant.partial
    assert entries[2].kind == "final" and entries[2].name == "cancelled" and not entries[2].error


def test_a_tool_call_and_its_result_are_one_entry_and_an_error_result_is_highlighted():
    entries = console.transcript(
        events(
            ("tool.called", {"call_id": "c1", "name": "calculate", "arguments": '{"expression": "1/0"}'}),
            ("tool.called", {"call_id": "c2", "name": "calculate", "arguments": '{"expression": "1+1"}'}),
            ("tool.output", {"call_id": "c1", "name": "calculate", "output": "error: division by zero"}),
            ("tool.output", {"call_id": "c2", "name": "calculate", "output": "2"}),
            ("run.failed", {"error": "boom"}),
        )
    )
    tools = [e for e in entries if e.kind == "tool"]
    assert [(t.arguments, t.output, t.error) for t in tools] == [
        ('{"expression": "1/0"}', "error: division by zero", True),
        ('{"expression": "1+1"}', "2", False),
    ]
    assert tools[0].event_type == "tool.called → tool.output"
    assert entries[-1].error and entries[-1].text == "boom"


def test_agent_changes_handoffs_sandboxes_and_unknown_events_are_short_lines():
    entries = console.transcript(
        events(
            ("agent.updated", {"agent": "triage"}),
            ("handoff", {"stage": "handoff_occured", "agent": "billing"}),
            ("agent.updated", {"agent": "billing"}),
            ("sandbox.started", {"sandbox_id": "sbx_1", "provider": "local"}),
            ("approval.requested", {"tool": "exec_command"}),
            ("run.budget_exceeded", {"limit": "max_turns", "max_turns": 3}),
            ("run.started", {"attempt": 2}),
        ),
        agent="triage",
    )
    assert [e.kind for e in entries[1:]] == ["handoff", "agent", "sandbox", "event", "note", "note"]
    assert entries[2].name == "billing"
    assert entries[4].event_type == "approval.requested" and "exec_command" in entries[4].text
    assert entries[5].error and "max_turns" in entries[5].text
    assert entries[6].text == "attempt 2"


@pytest.mark.parametrize(
    ("output", "span_error", "expected"),
    [
        ("error: division by zero", None, True),
        ("Error: no such file", None, True),
        ("An error occurred while running the tool. Please try again.", None, True),
        ("42", None, False),
        ("the error rate is 2%", None, False),
        ("42", {"message": "Error running tool"}, True),
        (None, None, False),
    ],
)
def test_the_tool_error_rule(output, span_error, expected):
    assert console.is_tool_error(output, span_error) is expected


# --- sandbox commands -----------------------------------------------------------------------


def shell_result(output: str, *, exit_code: int | None = None, session: int | None = None) -> str:
    lines = ["Chunk ID: abc123", "Wall time: 0.2500 seconds"]
    if exit_code is not None:
        lines.append(f"Process exited with code {exit_code}")
    if session is not None:
        lines.append(f"Process running with session ID {session}")
    return "\n".join([*lines, "Output:", output])


def test_sandbox_commands_have_their_exit_codes_and_output():
    entries = console.transcript(
        events(
            ("tool.called", {"call_id": "a", "name": "exec_command", "arguments": '{"cmd": "echo hi"}'}),
            ("tool.output", {"call_id": "a", "output": shell_result("hi\n", exit_code=0)}),
            ("tool.called", {"call_id": "b", "name": "exec_command", "arguments": '{"cmd": "false"}'}),
            ("tool.output", {"call_id": "b", "output": shell_result("", exit_code=1)}),
            ("tool.called", {"call_id": "c", "name": "exec_command", "arguments": '{"cmd": "sleep 1; echo done"}'}),
            ("tool.output", {"call_id": "c", "output": shell_result("", session=7)}),
            ("tool.called", {"call_id": "d", "name": "write_stdin", "arguments": '{"session_id": 7, "chars": ""}'}),
            ("tool.output", {"call_id": "d", "output": shell_result("done\n", exit_code=0)}),
            ("tool.called", {"call_id": "e", "name": "calculate", "arguments": "{}"}),
        )
    )
    commands = console.sandbox_commands(entries)
    assert [(c.cmd, c.exit_code, c.output, c.failed, c.running) for c in commands] == [
        ("echo hi", 0, "hi\n", False, False),
        ("false", 1, "", True, False),
        ("sleep 1; echo done", 0, "done\n", False, False),
    ]
    assert commands[2].wall_seconds == pytest.approx(0.5)


@pytest.mark.parametrize("session_id", ['"abc"', "[1]", "null", "1e999"])
def test_a_model_s_odd_shell_arguments_do_not_break_the_page(session_id):
    """Arguments are stored as the model sent them, before the SDK checks them."""
    entries = console.transcript(
        events(
            ("tool.called", {"call_id": "a", "name": "write_stdin", "arguments": f'{{"session_id": {session_id}}}'}),
            ("tool.output", {"call_id": "a", "output": "Wall time: 1.2.3 seconds\nOutput:\nx"}),
        )
    )
    [command] = console.sandbox_commands(entries)
    assert command.wall_seconds == 0.0 and "input to session" in command.cmd


# --- span tree and waterfall ------------------------------------------------------------------


def test_spans_form_a_tree_in_depth_first_order_on_a_millisecond_axis():
    spans = [
        span("tool", "turn", start_ms=60, ms=20, data={"output": "error: division by zero"}),
        span("root", start_ms=0, ms=100, kind="custom", name="task"),
        span("agent", "root", start_ms=1, ms=98, kind="agent", name="calculator"),
        span("turn", "agent", start_ms=2, ms=90, kind="custom", name="turn"),
        span("gen", "turn", start_ms=3, ms=50, kind="generation", name="offline"),
        span("orphan", "missing-parent", start_ms=95, ms=5, error={"message": "boom"}),
    ]
    waterfall = console.span_tree(spans)
    assert [(row.span.id, row.depth) for row in waterfall.rows] == [
        ("root", 0),
        ("agent", 1),
        ("turn", 2),
        ("gen", 3),
        ("tool", 3),
        ("orphan", 0),
    ]
    assert waterfall.total_ms == pytest.approx(100)
    tool = waterfall.rows[4]
    assert tool.left_pct == pytest.approx(60) and tool.width_pct == pytest.approx(20)
    assert tool.style == "left:60.000%;width:20.000%" and tool.error  # the tool answered with an error
    assert waterfall.rows[5].error and not waterfall.rows[3].error
    assert waterfall.rows[0].kind == "task" and waterfall.rows[0].children == 1
    assert [label for _, label in waterfall.ticks] == ["0", "20.0 ms", "40.0 ms", "60.0 ms", "80.0 ms", "100 ms"]


def test_a_cycle_of_parents_is_cut_and_every_span_is_shown_once():
    spans = [span("a", "b", start_ms=0, ms=1), span("b", "a", start_ms=1, ms=1)]
    rows = console.span_tree(spans).rows
    assert sorted(row.span.id for row in rows) == ["a", "b"]
    assert console.span_tree([]).rows == []


def test_a_click_on_a_span_shows_its_input_output_usage_cost_and_error():
    from decimal import Decimal

    generation = span(
        "gen",
        start_ms=0,
        ms=5,
        kind="generation",
        usage={"input_tokens": 49, "output_tokens": 58},
        cost_usd=Decimal("0.000123"),
        data={
            "type": "generation",
            "input": [{"role": "user", "content": "What is 1/0?"}],
            "output": [{"type": "function_call", "name": "calculate"}],
            "model": "offline",
            "usage": {"input_tokens": 49},
        },
    )
    detail = console.span_detail(generation)
    assert '"content": "What is 1/0?"' in detail.input.shown and '"name": "calculate"' in detail.output.shown
    assert detail.usage == '{"input_tokens": 49, "output_tokens": 58}' and detail.cost_usd == Decimal("0.000123")
    assert '"model": "offline"' in detail.other.shown and "usage" not in detail.other.shown
    tool = span("tool", start_ms=0, ms=1, error={"message": "Error running tool"}, data={"input": '{"x": 1}'})
    assert '"message": "Error running tool"' in console.span_detail(tool).error
    assert console.span_detail(tool).input.shown == '{\n  "x": 1\n}'


def test_long_values_are_clipped_for_the_page(settings):
    settings.HARNESS_CONSOLE_PREVIEW_CHARS = 200
    clipped = console.Clipped.of("x" * 250)
    assert len(clipped.shown) == 200 and clipped.omitted == 50
