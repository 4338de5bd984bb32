"""Each grader's pass and fail cases."""

from __future__ import annotations

import pytest
from django.db import connection

from audit.models import AuditLog
from conftest import make_run
from evals import graders
from execution.executor import run_execute
from runs.models import RunEvent, Span


@pytest.mark.parametrize(
    ("check", "output", "passes"),
    [
        ({"type": "exact", "value": "6 * 7 = 42"}, "6 * 7 = 42", True),
        ({"type": "exact", "value": "6 * 7 = 42"}, "6 * 7 = 42.", False),
        ({"type": "contains", "value": "42"}, "it is 42", True),
        ({"type": "contains", "value": "42"}, "it is 41", False),
        ({"type": "not_contains", "value": "error"}, "fine", True),
        ({"type": "not_contains", "value": "error"}, "an error", False),
        ({"type": "regex", "value": r"= \d+$"}, "6 * 7 = 42", True),
        ({"type": "regex", "value": r"= \d+$"}, "6 * 7 = forty-two", False),
        ({"type": "regex", "value": r"("}, "x", False),
        ({"type": "json_field", "path": "total.count", "equals": 3}, '{"total": {"count": 3}}', True),
        ({"type": "json_field", "path": "total.count", "equals": 3}, '{"total": {"count": 4}}', False),
        ({"type": "json_field", "path": "items.1", "equals": "b"}, '{"items": ["a", "b"]}', True),
        ({"type": "json_field", "path": "missing"}, '{"total": 1}', False),
        ({"type": "json_field", "path": "total"}, "not json", False),
        ({"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}, '{"a": 1}', True),
        ({"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}, '{"b": 1}', False),
        ({"type": "nonsense"}, "x", False),
    ],
)
def test_output_checks(check, output, passes):
    reasons = graders.grade_output({"expected_output": "", "assertions": [check]}, output)
    assert (reasons == []) is passes, reasons


def test_expected_output_and_match_mode():
    case = {"expected_output": "= 20", "output_match": "contains", "assertions": []}
    assert graders.grade_output(case, "(2 + 3) * 4 = 20") == []
    assert "does not contain '= 20'" in graders.grade_output(case, "(2 + 3) * 4 = 21")[0]
    assert graders.grade_output({**case, "output_match": "exact"}, "(2 + 3) * 4 = 20")[0].startswith(
        "output is not exactly"
    )
    assert graders.grade_output({**case, "output_match": "none"}, "anything") == []
    assert graders.grade_output(case, None) == ["the run produced no output"]


def test_tool_checks():
    calls = [{"name": "calculate", "arguments": {"expression": "6 * 7"}}, {"name": "text_stats", "arguments": "raw"}]
    assert graders.grade_tools({"expected_tools": [{"name": "calculate"}]}, calls) == []
    assert (
        graders.grade_tools({"expected_tools": [{"name": "calculate", "arguments": {"expression": "6 * 7"}}]}, calls)
        == []
    )
    (wrong_args,) = graders.grade_tools(
        {"expected_tools": [{"name": "calculate", "arguments": {"expression": "6 * 8"}}]}, calls
    )
    assert "never with" in wrong_args
    (missing,) = graders.grade_tools({"expected_tools": [{"name": "save_artifact"}]}, calls)
    assert "expected tool 'save_artifact' was not called" in missing
    (forbidden,) = graders.grade_tools({"forbidden_tools": ["text_stats"]}, calls)
    assert forbidden == "forbidden tool 'text_stats' was called"
    assert graders.grade_tools({"forbidden_tools": ["save_artifact"]}, calls) == []


@pytest.mark.django_db(transaction=True)
def test_trace_sanity_passes_a_good_run_and_names_each_defect(alice):
    run = make_run(alice, input="What is 6 * 7?")
    run_execute(run.pk)
    assert graders.grade_trace(run) == []
    assert graders.tool_calls_of(run) == [{"name": "calculate", "arguments": {"expression": "6 * 7"}}]

    Span.objects.filter(run=run, kind="function").update(data={})
    assert graders.grade_trace(run) == ["trace: tool span 'calculate' has no result"]
    Span.objects.filter(run=run).delete()
    reasons = graders.grade_trace(run)
    assert "trace: no agent span" in reasons and "trace: no model (generation/response) span" in reasons

    other = make_run(alice, input="What is 1 + 1?")
    run_execute(other.pk)
    called = RunEvent.objects.get(run=other, type="tool.called")
    called.delete()
    assert f"events: a gap in the log (event {called.seq} is missing; next is {called.seq + 1})" in graders.grade_trace(
        other
    )

    third = make_run(alice, input="What is 2 + 2?")
    run_execute(third.pk)
    with connection.cursor() as cursor:  # the audit log refuses deletes; go around it to fake a gap
        cursor.execute(
            f"DELETE FROM {AuditLog._meta.db_table} WHERE run_id = %s AND action = %s",  # noqa: S608 (a model's table)
            [third.pk, "run.started"],
        )
    assert graders.grade_trace(third) == ["audit: no 'run.started' row for the run.started event"]
