"""Graders: each returns the reasons a produced run fails its golden case (empty: it passes).

- output: the expected output (exact, contains, regex) and the extra assertions
  (exact, contains, not_contains, regex, json_field, json_schema);
- tools: every expected tool was called (with the expected arguments, when given) and no
  forbidden tool was;
- trace: the run has its agent and model spans, every tool span has a result, its events
  are numbered 1..n without gaps and end with its final event, and each state transition
  has its audit row.
"""

from __future__ import annotations

import json
import re
from typing import Any

from audit.models import AuditLog
from runs import events as run_events
from runs.models import Run, RunEvent, Span

# The audit action each transition event must have.
TRANSITION_ACTIONS = {
    run_events.QUEUED: "run.created",
    run_events.STARTED: "run.started",
    run_events.REQUEUED: "run.requeued",
    run_events.SUCCEEDED: "run.succeeded",
    run_events.FAILED: "run.failed",
    run_events.CANCELLED: "run.cancelled",
}
FINAL_EVENTS = {run_events.SUCCEEDED, run_events.FAILED, run_events.CANCELLED}


def _short(text: str, limit: int = 120) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_path(value: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, list) and part.isdigit():
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value[part]
        else:
            raise KeyError(part)
    return value


def _check(kind: str, check: dict[str, Any], output: str) -> str | None:
    """One output check; the reason it fails, or None."""
    value = check.get("value", "")
    if kind == "exact":
        return None if output == value else f"output is not exactly {_short(str(value))!r} (got {_short(output)!r})"
    if kind == "contains":
        return (
            None if str(value) in output else f"output does not contain {_short(str(value))!r} (got {_short(output)!r})"
        )
    if kind == "not_contains":
        return None if str(value) not in output else f"output contains {_short(str(value))!r}, which it must not"
    if kind == "regex":
        try:
            found = re.search(str(value), output, re.MULTILINE)
        except re.error as exc:
            return f"invalid regular expression {value!r}: {exc}"
        return None if found else f"output does not match /{value}/ (got {_short(output)!r})"
    if kind in ("json_field", "json_schema"):
        try:
            document = json.loads(output)
        except ValueError:
            return f"output is not JSON (got {_short(output)!r})"
        if kind == "json_schema":
            return _schema_reason(document, check.get("schema") or {})
        path = str(check.get("path", ""))
        try:
            found_value = _json_path(document, path)
        except (KeyError, IndexError):
            return f"output JSON has no field {path!r}"
        if "equals" in check and found_value != check["equals"]:
            return f"output JSON field {path!r} is {found_value!r}, expected {check['equals']!r}"
        return None
    return f"unknown assertion type {kind!r}"


def _schema_reason(document: Any, schema: dict[str, Any]) -> str | None:
    import jsonschema

    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the document"
        return f"output JSON fails its schema at {where}: {exc.message}"
    except jsonschema.SchemaError as exc:
        return f"invalid JSON schema: {exc.message}"
    return None


def grade_output(case: dict[str, Any], output: str | None) -> list[str]:
    if output is None:
        return ["the run produced no output"]
    reasons = []
    match = case.get("output_match", "contains")
    if match != "none" and case.get("expected_output", "") != "":
        reason = _check(match, {"value": case["expected_output"]}, output)
        if reason:
            reasons.append(reason)
    for check in case.get("assertions") or []:
        reason = _check(str(check.get("type", "")), check, output)
        if reason:
            reasons.append(reason)
    return reasons


def tool_calls_of(run: Run) -> list[dict[str, Any]]:
    """The run's tool calls in order; a handoff counts as a call of its tool (transfer_to_<agent>)."""
    calls = []
    kinds = (run_events.TOOL_CALLED, run_events.HANDOFF)
    for kind, data in run.events.filter(type__in=kinds).order_by("seq").values_list("type", "data"):
        if kind == run_events.HANDOFF:
            if data.get("stage") == "handoff_requested" and data.get("tool"):
                calls.append({"name": data["tool"], "arguments": {}})
            continue
        arguments: Any = data.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        calls.append({"name": data.get("name", ""), "arguments": arguments})
    return calls


def grade_tools(case: dict[str, Any], calls: list[dict[str, Any]]) -> list[str]:
    reasons = []
    called = [call["name"] for call in calls]
    for expected in case.get("expected_tools") or []:
        name = expected.get("name") if isinstance(expected, dict) else str(expected)
        wanted = expected.get("arguments") if isinstance(expected, dict) else None
        matching = [call for call in calls if call["name"] == name]
        if not matching:
            reasons.append(f"expected tool {name!r} was not called (called: {called or 'none'})")
            continue
        if wanted:
            fits = [
                call
                for call in matching
                if isinstance(call["arguments"], dict)
                and all(call["arguments"].get(key) == value for key, value in wanted.items())
            ]
            if not fits:
                reasons.append(
                    f"tool {name!r} was called, but never with {json.dumps(wanted)} "
                    f"(got {json.dumps(matching[0]['arguments'])[:120]})"
                )
    for name in case.get("forbidden_tools") or []:
        if name in called:
            reasons.append(f"forbidden tool {name!r} was called")
    return reasons


def grade_trace(run: Run) -> list[str]:
    reasons = []
    spans = list(Span.objects.filter(run=run).values_list("kind", "name", "data", "error"))
    kinds = {kind for kind, _, _, _ in spans}
    if "agent" not in kinds:
        reasons.append("trace: no agent span")
    if not kinds & {"generation", "response"}:
        reasons.append("trace: no model (generation/response) span")
    for kind, name, data, error in spans:
        if kind == "function" and ((data or {}).get("output") is None or error):
            reasons.append(f"trace: tool span {name!r} has no result" + (f" ({error})" if error else ""))
    seqs_types = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", "type"))
    seqs = [seq for seq, _ in seqs_types]
    expected_seq = 1
    for seq in seqs:
        if seq != expected_seq:
            reasons.append(f"events: a gap in the log (event {expected_seq} is missing; next is {seq})")
            break
        expected_seq += 1
    if not seqs_types or seqs_types[-1][1] not in FINAL_EVENTS:
        reasons.append("events: the log does not end with the run's final event")
    actions = list(AuditLog.objects.filter(run_id=run.pk, target_type="run").values_list("action", flat=True))
    for _, kind in seqs_types:
        action = TRANSITION_ACTIONS.get(kind)
        if action is None:
            continue
        if action in actions:
            actions.remove(action)
        else:
            reasons.append(f"audit: no {action!r} row for the {kind} event")
    return reasons
