"""The durable run-event log.

Event numbers come from a counter on the run row, taken with the same UPDATE
that checks the run is still in the state the writer expects. So an event is
appended only while its writer owns the run: once a cancel (or the reaper) has
moved the run on and written the final event, a late batch from the worker
changes nothing, and nothing ever follows the final event.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from common.sql import insert_numbered, insert_rows, with_waiting
from common.text import safe_data
from harness_site.redaction import redact_data
from runs.models import Run, RunEvent
from runs.streams import events_publish_on_commit

QUEUED = "run.queued"
STARTED = "run.started"
REQUEUED = "run.requeued"
SUCCEEDED = "run.succeeded"
FAILED = "run.failed"
CANCELLED = "run.cancelled"
AGENT_UPDATED = "agent.updated"
TOOL_CALLED = "tool.called"
TOOL_OUTPUT = "tool.output"
MESSAGE = "message.created"
TEXT_DELTA = "text.delta"
HANDOFF = "handoff"
SANDBOX_STARTED = "sandbox.started"
SANDBOX_STOPPED = "sandbox.stopped"
BUDGET_EXCEEDED = "run.budget_exceeded"
# An input or output guardrail of the agent tripped: the run fails (guardrail_tripped).
GUARDRAIL_TRIPPED = "run.guardrail_tripped"
# Human approval of tool calls (approvals/): a call waits for a person, a person (or the
# expiry, or a cancel) decides it, and a worker takes the run up again.
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_DECIDED = "approval.decided"
RESUMED = "run.resumed"

FINAL_TYPES = {Run.Status.SUCCEEDED: SUCCEEDED, Run.Status.FAILED: FAILED, Run.Status.CANCELLED: CANCELLED}

EventSpec = tuple[str, dict[str, Any]]

# The run's columns by attname, for the raw UPDATEs that reserve event numbers.
RUN_FIELDS = {field.attname: field for field in Run._meta.concrete_fields}


@cache
def _take_sql(fields: tuple[str, ...], status: bool, worker: bool) -> str:
    quote = connection.ops.quote_name
    assignments = [f"{quote(str(RUN_FIELDS[name].column))} = %s" for name in fields]
    sql = f"UPDATE {quote(Run._meta.db_table)} SET {', '.join([*assignments, 'event_seq = event_seq + %s'])} WHERE id = %s"  # noqa: S608 (names are ours)
    return sql + (" AND status = %s" if status else "") + (" AND worker_id = %s" if worker else "")


def _take_params(
    run_id: str, count: int, status: str | None, worker_id: str | None, fields: dict[str, Any] | None = None
) -> list[Any]:
    params = [RUN_FIELDS[name].get_db_prep_save(value, connection) for name, value in (fields or {}).items()]
    params += [count, run_id]
    return params + [value for value in (status, worker_id) if value is not None]


def take_seqs(
    run_id: str,
    count: int,
    *,
    status: str | None,
    worker_id: str | None,
    fields: dict[str, Any] | None = None,
) -> int | None:
    """Reserve `count` sequence numbers, setting `fields` of the run in the same UPDATE;
    returns the last number, or None if the run is not as expected (nothing changed). The
    INSERTs waiting in an `inserts_together` block are made by the same statement."""
    sql = _take_sql(tuple(fields or ()), status is not None, worker_id is not None)
    params = _take_params(run_id, count, status, worker_id, fields)
    with connection.cursor() as cursor:
        cursor.execute(*with_waiting(sql + " RETURNING event_seq", params))
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def events_append(
    *,
    run_id: str,
    events: Sequence[EventSpec],
    require_status: str | None = None,
    require_worker: str | None = None,
) -> list[dict[str, Any]] | None:
    """Append events to a run's log in one batch. None when the run is not in the required state.

    On Postgres the numbers are taken and the events written by one statement: outside a
    transaction its own (a batch of a running run's events: one round trip instead of three),
    inside one a part of it (a cancel, the reaper, an approval)."""
    if not events:
        return []
    if connection.vendor == "postgresql":
        payloads = _payloads(events, 1 - len(events))  # numbered from the last: ..., -1, 0
        counter = _take_sql((), require_status is not None, require_worker is not None) + " RETURNING event_seq AS n"
        try:
            last = insert_numbered(
                RunEvent,
                _rows(run_id, payloads),
                numbered="seq",
                counter=counter,
                params=_take_params(run_id, len(events), require_status, require_worker),
            )
        except (TypeError, ValueError):
            pass  # a value JSON does not carry as the field would store it: the two statements
        else:
            if last is None:
                return None
            for payload in payloads:
                payload["seq"] += last
            events_publish_on_commit(run_id, payloads)
            return payloads
    with transaction.atomic():
        last = take_seqs(run_id, len(events), status=require_status, worker_id=require_worker)
        if last is None:
            return None
        return events_insert(run_id=run_id, events=events, last_seq=last)


def _payloads(events: Sequence[EventSpec], first: int) -> list[dict[str, Any]]:
    return [
        {"seq": first + offset, "type": kind, "data": redact_data(safe_data(data))}
        for offset, (kind, data) in enumerate(events)
    ]


def _rows(run_id: str, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = timezone.now()
    return [{"run": run_id, "seq": p["seq"], "type": p["type"], "data": p["data"], "created_at": now} for p in payloads]


def events_insert(
    *, run_id: str, events: Sequence[EventSpec], last_seq: int, publish: bool = True
) -> list[dict[str, Any]]:
    """Write events whose numbers (up to `last_seq`) the caller has reserved; publish on commit
    (`publish=False`: nobody can be listening yet; a stream replays them from the log).

    Their text is stored safely (common.text.safe_data: NUL and lone surrogates become U+FFFD)
    and redacted."""
    payloads = _payloads(events, last_seq - len(events) + 1)
    insert_rows(RunEvent, _rows(run_id, payloads))
    if publish:
        events_publish_on_commit(run_id, payloads)
    return payloads
