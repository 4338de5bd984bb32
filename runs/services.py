"""Every write to sessions and runs. Each state change is one conditional update
plus its events and audit row, in one transaction; enqueueing happens on commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from audit.services import Actor, audit_record
from common.db import unique_row
from common.sql import fetch_values, fetch_values_beside, insert_object, insert_rows, inserts_together
from common.text import safe_data, safe_text
from runs import events
from runs.models import Run, Session, SessionItem, Span, Trace

logger = logging.getLogger(__name__)


class RunServiceError(Exception):
    status_code = 400


class SessionNotFound(RunServiceError):
    status_code = 404


class SessionBusy(RunServiceError):
    status_code = 409


class RunNotCancellable(RunServiceError):
    status_code = 409


class InvalidFiles(RunServiceError):
    status_code = 422


def _check_input_files(*, owner: User, agent: str, files: list[str]) -> None:
    from artifacts.models import Artifact
    from runs.published import published_get

    if not files:
        return
    spec = published_get(agent)
    if spec is None or not spec.sandbox:
        raise InvalidFiles(f"files: agent {agent!r} has no sandbox to put files in; use a sandbox agent such as coder")
    ready = set(
        Artifact.objects.filter(pk__in=files, run__owner=owner, status=Artifact.Status.READY).values_list(
            "pk", flat=True
        )
    )
    unknown = [artifact_id for artifact_id in files if artifact_id not in ready]
    if unknown:
        raise InvalidFiles(f"files: artifact(s) not found or not ready: {', '.join(unknown)}")


def _record(*, run_id: str, event: events.EventSpec, action: str, actor: Actor, data: dict[str, Any]) -> None:
    """The event and audit row of one state change (call inside its transaction)."""
    events.events_append(run_id=run_id, events=[event])
    audit_record(action=action, actor=actor, target_type="run", target_id=run_id, run_id=run_id, data=data)


RUN_TASK_PREFIX = "run:"


def run_enqueue(run_id: str) -> bool:
    """Hand the run to the run engines (its own broker queue). Safe to repeat: only one
    worker can claim a run.

    The task is the run id alone, unsigned: the database row is the truth (a worker only
    claims a run that is queued there), so a task depends on no key the web and the worker
    must share. With the broker unreachable the run stays queued and this says so in the
    log; the reaper enqueues it again once it has waited HARNESS_REQUEUE_AFTER_SECONDS."""
    try:
        run_broker().enqueue(f"{RUN_TASK_PREFIX}{run_id}")
    except Exception as exc:
        logger.warning(
            "run queue unavailable: the run stays queued until the reaper enqueues it again",
            extra={"run_id": run_id, "error": type(exc).__name__},
        )
        return False
    return True


_brokers: dict[str, Any] = {}


def run_broker() -> Any:
    """The broker queue that carries runs, one client per process (not a connection per run)."""
    from django_q.brokers import get_broker

    key = f"{settings.HARNESS_RUN_QUEUE}|{settings.REDIS_URL}|{settings.Q_CLUSTER.get('orm', '')}"
    broker = _brokers.get(key)
    if broker is None:
        broker = _brokers[key] = get_broker(settings.HARNESS_RUN_QUEUE)
    return broker


@transaction.atomic
def run_create(
    *,
    owner: User,
    actor: Actor,
    input: str,
    agent: str,
    model: str,
    session_id: str | None = None,
    files: list[str] | None = None,
    origin: str = "api",
    history: list[dict[str, Any]] | None = None,
    enqueue: bool = True,
    limits: dict[str, Any] | None = None,
    trace_context: dict[str, str] | None = None,
    otel_trace_id: str = "",
    retry_of: Run | None = None,
    offline_script: dict[str, Any] | None = None,
) -> Run:
    """Create a queued run (in a new session, or continuing one of the owner's).

    `history` seeds a new session with earlier conversation items (the eval runner replays
    golden rows that continued a session); `enqueue=False` leaves the run for the caller
    to execute in-process. `limits` are what the client asked (max_cost_usd, max_tokens,
    max_turns, max_sandbox_seconds), clamped here by the maxima; the principal's budget is
    checked first (billing.services.BudgetError: nothing is written). `trace_context`
    carries the request's OpenTelemetry context to the worker.
    """
    from billing.services import budget_check_create, budget_for_update, limits_resolve
    from runs.published import published_get

    files = list(files or [])
    _check_input_files(owner=owner, agent=agent, files=files)
    budget = budget_for_update(owner.pk)
    budget_check_create(owner_id=owner.pk, budget=budget)
    spec = published_get(agent)
    run_limits = limits_resolve(
        model=model, budget=budget, agent_maxima=spec.maxima if spec else None, **(limits or {})
    )
    # The new session, run, its run.queued event and audit row go to the database as one statement.
    with inserts_together():
        if session_id:
            # The row lock keeps two runs of one session from both passing the busy check.
            session = unique_row(Session.objects.select_for_update().filter(pk=session_id, owner=owner))
            if session is None:
                raise SessionNotFound(f"session {session_id!r} not found")
            # A run waiting for approval holds its session too: its conversation is not yet written.
            waiting = [*Run.ACTIVE_STATUSES, Run.Status.AWAITING_APPROVAL]
            busy = Run.objects.filter(session=session, status__in=waiting).values_list("id", flat=True).first()
            if busy:
                raise SessionBusy(
                    f"session {session_id} already has a run in progress ({busy}); wait for it or cancel it"
                )
        else:
            session = insert_object(Session(owner=owner))
            SessionItem.objects.bulk_create([SessionItem(session=session, data=item) for item in history or []])
        run = Run(
            owner=owner,
            session=session,
            agent=agent,
            model=model,
            input=input,
            input_files=files,
            event_seq=1,  # its run.queued event, written with it
            origin=origin,
            limits=run_limits.as_json(),
            trace_context=trace_context or {},
            otel_trace_id=otel_trace_id,
            retry_of=retry_of,
            offline_script=offline_script,
        )
        insert_object(run)
        # A new run is nobody else's yet: its first event needs no counter update, and no stream can
        # be following a run whose id is not yet known (a stream replays it from the log).
        events.events_insert(
            run_id=run.id, events=[(events.QUEUED, {"status": Run.Status.QUEUED})], last_seq=1, publish=False
        )
        audit_record(
            action="run.created",
            actor=actor,
            target_type="run",
            target_id=run.id,
            run_id=run.id,
            data={
                "agent": agent,
                "model": model,
                "session_id": session.id,
                "input_chars": len(input),
                "limits": run_limits.as_json(),
                **({"files": files} if files else {}),
                **({"offline_script": True} if offline_script is not None else {}),
            },
        )
    if enqueue:
        transaction.on_commit(lambda: run_enqueue(run.id))
    return run


@transaction.atomic
def run_cancel(*, run: Run, actor: Actor, reason: str = "cancelled by request") -> Run:
    """Cancel a queued, running or waiting (awaiting_approval) run. A running one is stopped
    by its worker, which sees the status change within HARNESS_CANCEL_CHECK_SECONDS; a
    waiting one's approvals are cancelled and its paused state dropped."""
    from approvals.services import approvals_close

    now = timezone.now()
    # The row is locked first: a decision moving the run from awaiting_approval to queued, or a
    # worker's claim, either happens before this reads the status or waits for this to commit.
    previous = Run.objects.select_for_update().filter(pk=run.pk).values_list("status", flat=True).first()
    cancellable = (Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.AWAITING_APPROVAL)
    if previous not in cancellable or not Run.objects.filter(pk=run.pk, status=previous).update(
        status=Run.Status.CANCELLED, finished_at=now, error=reason, lease_expires_at=None
    ):
        run.refresh_from_db()
        raise RunNotCancellable(
            f"run {run.id} is already {run.status}; only queued, running or awaiting_approval runs can be cancelled"
        )
    approvals_close(run_id=run.pk, reason=reason, actor=actor)
    _record(
        run_id=run.pk,
        event=(events.CANCELLED, {"status": Run.Status.CANCELLED, "error": reason}),
        action="run.cancelled",
        actor=actor,
        data={"from": previous, "reason": reason},
    )
    run.refresh_from_db()
    return run


class PrincipalBusy(RunServiceError):
    """The run's owner already has HARNESS_PRINCIPAL_MAX_INFLIGHT runs running."""

    status_code = 429

    def __init__(self, owner_id: int, inflight: int) -> None:
        super().__init__(f"principal {owner_id} has {inflight} runs in flight")
        self.owner_id = owner_id


@dataclass
class Claim:
    """A run this worker now holds, with its session's conversation so far."""

    run: Run
    history: list[tuple[int, Any]]  # (SessionItem id, item), oldest first
    # A run that paused for approval and was decided: its stored state (approvals.services.Resume).
    resume: Any = None


@transaction.atomic
def run_claim(*, run_id: str, worker_id: str, principal_cap: int | None = None) -> Claim | None:
    """Take a queued run for this worker, in one transaction with its event, audit row
    and the session's items. None when another worker (or a cancel) got there first.

    With `principal_cap`, raises PrincipalBusy (and changes nothing) while the owner
    has that many runs running; on Postgres the owner's claims are serialised by an
    advisory lock, so concurrent workers cannot overshoot the cap.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.HARNESS_RUN_LEASE_SECONDS)
    table = connection.ops.quote_name(Run._meta.db_table)
    columns = ", ".join(CLAIM_COLUMNS)
    # On Postgres the owner's lock is taken by the claim's UPDATE, and the owner's running runs
    # are counted by the statement that writes the claim's rows (below): a later statement, so
    # it sees every claim committed before the lock was ours.
    folded = principal_cap is not None and connection.vendor == "postgresql"
    locking = ", pg_advisory_xact_lock(%s, owner_id)" if folded else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, worker_id = %s, attempts = attempts + 1, "  # noqa: S608 (names are ours)
            "lease_expires_at = %s, started_at = %s, event_seq = event_seq + 1 "
            f"WHERE id = %s AND status = %s RETURNING {columns}{locking}",
            [
                Run.Status.RUNNING,
                worker_id,
                *_prep_datetimes(lease, now),
                run_id,
                Run.Status.QUEUED,
                *([CLAIM_LOCK_SPACE] if folded else []),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    run = Run.from_db(connection.alias, list(CLAIM_FIELDS), _from_db_values(row[: len(CLAIM_FIELDS)]))
    counting: tuple[str, list[Any]] = (
        f"SELECT COUNT(*) FROM {table} WHERE owner_id = %s AND status = %s",  # noqa: S608 (names are ours)
        [run.owner_id, str(Run.Status.RUNNING)],
    )
    if principal_cap is not None and not folded:
        with connection.cursor() as cursor:
            cursor.execute(*counting)
            _busy_unless_room(run, cursor.fetchone()[0], principal_cap)
    if run.attempts > 1:
        # What an earlier, lost attempt wrote to the conversation would be repeated.
        SessionItem.objects.filter(run=run).delete()
    from approvals.services import resume_for_claim

    # A run decided after a pause carries on from its stored state (not a new attempt). A run
    # claimed for the first time has only its run.queued event and this claim's (event_seq 2):
    # it never paused, so the common case costs no look-up.
    resume = resume_for_claim(run_id=run_id) if run.event_seq > 2 else None
    started: dict[str, Any] = {"attempt": run.attempts}
    if resume is not None:
        started["decisions"] = resume.summary()
        first_start = resume.started_at()
        if first_start is not None:  # its duration counts from its first start, the wait included
            Run.objects.filter(pk=run_id).update(started_at=first_start)
            run.started_at = first_start
    with inserts_together():
        events.events_insert(
            run_id=run_id,
            events=[(events.RESUMED if resume else events.STARTED, {"status": Run.Status.RUNNING, **started})],
            last_seq=run.event_seq,
        )
        audit_record(
            action="run.resumed" if resume else "run.started",
            actor=Actor.worker(worker_id),
            target_type="run",
            target_id=run_id,
            run_id=run_id,
            data=started,
        )
        # The session's conversation, read by the statement that writes them.
        if folded:
            inflight, history = fetch_values_beside(
                *counting, SessionItem, ("id", "data"), "session_id = %s", [run.session_id], order_by="id"
            )
        else:
            history = fetch_values(SessionItem, ("id", "data"), "session_id = %s", [run.session_id], order_by="id")
    if folded:
        _busy_unless_room(run, inflight, principal_cap)  # type: ignore[arg-type]
    return Claim(run=run, history=history, resume=resume)


def _busy_unless_room(run: Run, inflight: int, principal_cap: int) -> None:
    """Raise PrincipalBusy, and roll back the claim, if its owner has more than `principal_cap`
    runs running (this one counts itself)."""
    if inflight > principal_cap:
        transaction.set_rollback(True)
        raise PrincipalBusy(run.owner_id, inflight - 1)


# What a claim reads back from its UPDATE: all the worker needs of the run, as
# attnames in the model's field order (Run.from_db takes them in that order).
CLAIM_FIELDS = (
    "id",
    "owner_id",
    "session_id",
    "agent",
    "model",
    "input",
    "input_files",
    "status",
    "offline_script",  # (in the model's field order: Run.from_db reads them so)
    "limits",
    "created_at",
    "started_at",
    "attempts",
    "worker_id",
    "trace_context",
    "event_seq",
    "origin",
)
_RUN_FIELDS = events.RUN_FIELDS
CLAIM_COLUMNS = tuple(connection.ops.quote_name(str(_RUN_FIELDS[name].column)) for name in CLAIM_FIELDS)


def _prep_datetimes(*values: datetime) -> list[Any]:
    field = Run._meta.get_field("started_at")
    return [field.get_db_prep_save(value, connection) for value in values]


def _from_db_values(row: tuple[Any, ...]) -> list[Any]:
    """Column values as the ORM would load them (JSON decoded, datetimes aware)."""
    values = list(row)
    for index, name in enumerate(CLAIM_FIELDS):
        field = _RUN_FIELDS[name]
        column = field.get_col(Run._meta.db_table)
        for converter in connection.ops.get_db_converters(column) + field.get_db_converters(connection):
            values[index] = converter(values[index], column, connection)
    return values


# pg_advisory_xact_lock(key1, key2): this namespace, the owner's id.
CLAIM_LOCK_SPACE = 7_341


def run_heartbeat(*, run_id: str, worker_id: str) -> bool:
    """Extend the worker's lease. False when the run is no longer this worker's to run."""
    return run_heartbeat_many(worker_ids=[worker_id]) == 1


def run_heartbeat_many(*, worker_ids: list[str]) -> int:
    """Extend the leases of every run these claims still hold, in one statement."""
    if not worker_ids:
        return 0
    lease = timezone.now() + timedelta(seconds=settings.HARNESS_RUN_LEASE_SECONDS)
    return Run.objects.filter(status=Run.Status.RUNNING, worker_id__in=worker_ids).update(lease_expires_at=lease)


def run_states(*, run_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Status and holder of each run, in one query (the worker's watcher asks for all its runs,
    several times a second: on Postgres the ids go as one array, so the statement is the same
    text whatever the number of runs and the driver converts it once)."""
    if not run_ids:
        return {}
    table = connection.ops.quote_name(Run._meta.db_table)
    params: list[Any]
    if connection.vendor == "postgresql":
        where, params = "id = ANY(%s)", [list(run_ids)]
    else:
        where, params = f"id IN ({', '.join(['%s'] * len(run_ids))})", list(run_ids)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, status, worker_id FROM {table} WHERE {where}", params)  # noqa: S608 (names are ours)
        return {run_id: (status, worker_id) for run_id, status, worker_id in cursor.fetchall()}


def run_record_events(*, run_id: str, worker_id: str, batch: list[events.EventSpec]) -> bool:
    """Append the worker's events. False when the run was cancelled or taken from it."""
    written = events.events_append(
        run_id=run_id, events=batch, require_status=Run.Status.RUNNING, require_worker=worker_id
    )
    return written is not None


@dataclass
class MemoryChanges:
    """What a run did to its session's conversation, written with its outcome."""

    added: list[Any] = field(default_factory=list)
    removed_ids: list[int] = field(default_factory=list)
    cleared: bool = False


@dataclass
class RunOutcome:
    status: str
    output: str | None = None
    error: str = ""
    usage: dict[str, Any] | None = None
    trace: Trace | None = None
    spans: list[Span] | None = None
    model_calls: list[dict[str, Any]] | None = None
    # The output was over HARNESS_MAX_STORED_CHARS: the whole of it is this artifact.
    output_truncated: bool = False
    output_artifact_id: str = ""
    # What the model calls cost (None: a model without a price), and how much of it was
    # already charged to the principal's spend during the run.
    cost_usd: Decimal | None = None
    unpriced: bool = False
    charged: Decimal = Decimal(0)
    # The limit the run reached (billing.services.RunLimits), when it was stopped by one.
    budget: dict[str, Any] | None = None
    # An agent with a structured output type: its output as JSON.
    output_json: Any = None
    # The guardrail that ended the run (its kind, name and what it reported), when one tripped.
    guardrail: dict[str, Any] | None = None
    otel_trace_id: str = ""


@transaction.atomic
def run_finish(
    *,
    run_id: str,
    worker_id: str,
    outcome: RunOutcome,
    pending: list[events.EventSpec] | None = None,
    memory: MemoryChanges | None = None,
    session_id: str = "",
    owner_id: int | None = None,
) -> bool:
    """Record how a run ended, in one transaction: the events still pending, the final
    event, the outcome, usage, trace and spans, the session's new items and the audit row.

    False when the run had already been ended elsewhere (a cancel, the reaper): its
    pending events are then dropped (nothing follows a final event), while the usage,
    trace, cost and conversation are facts all the same and are kept. What the run
    cost and was not yet charged is added to the owner's spend.
    """
    from harness_site.redaction import redact, redact_data

    usage = outcome.usage or {}
    # What a model or tool produced may hold NUL or lone surrogates: stored as U+FFFD (common.text).
    error = redact(safe_text(outcome.error))
    output = redact(safe_text(outcome.output)) if outcome.output is not None else None
    model_calls = redact_data(safe_data(outcome.model_calls or []))
    cost: dict[str, Any] = {
        "cost_usd": outcome.cost_usd,
        "unpriced": outcome.unpriced,
        "total_tokens": int(usage.get("total_tokens") or 0),
    }
    if outcome.otel_trace_id:
        cost["otel_trace_id"] = outcome.otel_trace_id
    cost_text = None if outcome.cost_usd is None else str(outcome.cost_usd)
    data: dict[str, Any] = {"status": outcome.status, "usage": usage, "cost_usd": cost_text}
    output_json = redact_data(safe_data(outcome.output_json)) if outcome.output_json is not None else None
    if outcome.status == Run.Status.SUCCEEDED:
        data["output"] = output
        if output_json is not None:
            data["output_json"] = output_json
        if outcome.output_truncated:
            data["truncated"] = True
            data["output_artifact_id"] = outcome.output_artifact_id
    else:
        data["error"] = error
    budget = [(events.BUDGET_EXCEEDED, outcome.budget)] if outcome.budget else []
    guardrail = [(events.GUARDRAIL_TRIPPED, outcome.guardrail)] if outcome.guardrail else []
    batch = [*(pending or []), *budget, *guardrail, (events.FINAL_TYPES[Run.Status(outcome.status)], data)]
    fields = {
        **cost,
        "status": outcome.status,
        "output": output,
        "output_json": output_json,
        "error": error,
        "usage": usage,
        "finished_at": timezone.now(),
        "lease_expires_at": None,
        "trace_id": outcome.trace.id if outcome.trace else "",
        "model_calls": model_calls,
    }
    # The trace, its spans, the session's new items and the outcome: one statement.
    with inserts_together():
        if outcome.trace is not None:
            trace_insert(trace=outcome.trace, spans=outcome.spans or [])
        if memory is not None:
            _memory_apply(run_id=run_id, session_id=session_id, memory=memory)
        last_seq = events.take_seqs(run_id, len(batch), status=Run.Status.RUNNING, worker_id=worker_id, fields=fields)
    if last_seq is None:
        ended = Run.objects.filter(pk=run_id)
        ended.update(usage=usage, trace_id=outcome.trace.id if outcome.trace else "", model_calls=model_calls)
        ended.filter(cost_usd__isnull=True, unpriced=False).update(**cost)  # an attempt that finished keeps its own
        _charge(owner_id, outcome)
        return False
    # Its events and audit rows: one statement.
    with inserts_together():
        events.events_insert(run_id=run_id, events=batch, last_seq=last_seq)
        # What stopped the run, when a limit or a guardrail did: audited with its facts.
        for action, facts in (("run.budget_exceeded", outcome.budget), ("run.guardrail_tripped", outcome.guardrail)):
            if facts:
                audit_record(
                    action=action,
                    actor=Actor.worker(worker_id),
                    target_type="run",
                    target_id=run_id,
                    run_id=run_id,
                    data=facts,
                )
        audit_record(
            action=f"run.{outcome.status}",
            actor=Actor.worker(worker_id),
            target_type="run",
            target_id=run_id,
            run_id=run_id,
            data={"error": error, "cost_usd": cost_text} if error else {"usage": usage, "cost_usd": cost_text},
        )
    _charge(owner_id, outcome)  # last: the principal's spend row stays locked for as little as possible
    return True


def _charge(owner_id: int | None, outcome: RunOutcome) -> None:
    """Add to the owner's spend what the run cost and did not charge call by call."""
    from billing.services import spend_charge

    if owner_id is not None and outcome.cost_usd is not None:
        spend_charge(owner_id=owner_id, cost=outcome.cost_usd - outcome.charged)


def trace_insert(*, trace: Trace, spans: list[Span]) -> None:
    """A run's trace and spans (kept if another attempt already wrote the same ids)."""
    insert_rows(Trace, [_row(trace)], ignore_conflicts=True)
    for start in range(0, len(spans), 200):
        insert_rows(Span, [_row(span) for span in spans[start : start + 200]], ignore_conflicts=True)


def _row(instance: Any) -> dict[str, Any]:
    return {field.name: safe_data(getattr(instance, field.attname)) for field in instance._meta.concrete_fields}


def _memory_apply(*, run_id: str, session_id: str, memory: MemoryChanges) -> None:
    if not session_id:
        session_id = Run.objects.filter(pk=run_id).values_list("session_id", flat=True).first() or ""
        if not session_id:
            return
    if memory.cleared:
        SessionItem.objects.filter(session_id=session_id).delete()
    elif memory.removed_ids:
        SessionItem.objects.filter(session_id=session_id, pk__in=memory.removed_ids).delete()
    if memory.added:
        now = timezone.now()
        insert_rows(
            SessionItem,
            [
                {"session": session_id, "run": run_id, "data": safe_data(item), "created_at": now}
                for item in memory.added
            ],
        )


@dataclass
class ReapReport:
    requeued: list[str]
    failed: list[str]
    reenqueued: list[str]


def run_reap(*, now: datetime | None = None) -> ReapReport:
    """Find runs whose worker stopped heart-beating and retry or fail them.

    1. RUNNING runs whose lease expired: back to QUEUED while attempts remain
       (HARNESS_RUN_MAX_ATTEMPTS), else FAILED with the reason; each with an event
       and an audit row.
    2. QUEUED runs older than HARNESS_REQUEUE_AFTER_SECONDS while the task queue is
       empty lost their task (a crash between commit and enqueue): enqueue them again.
    """
    now = now or timezone.now()
    report = ReapReport([], [], [])
    expired = Run.objects.filter(status=Run.Status.RUNNING, lease_expires_at__lt=now)
    for run in expired.only("id", "attempts", "worker_id", "lease_expires_at"):
        with transaction.atomic():
            stale = Run.objects.filter(
                pk=run.pk, status=Run.Status.RUNNING, worker_id=run.worker_id, lease_expires_at__lt=now
            )
            reason = (
                f"the worker running it ({run.worker_id or 'unknown'}) stopped responding: "
                f"its lease expired at {run.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC "
                f"(attempt {run.attempts} of {settings.HARNESS_RUN_MAX_ATTEMPTS})"
            )
            actor = Actor.system("reaper")
            if run.attempts < settings.HARNESS_RUN_MAX_ATTEMPTS:
                if stale.update(status=Run.Status.QUEUED, worker_id="", lease_expires_at=None) != 1:
                    continue
                _record(
                    run_id=run.pk,
                    event=(events.REQUEUED, {"status": Run.Status.QUEUED, "reason": reason}),
                    action="run.requeued",
                    actor=actor,
                    data={"reason": reason},
                )
                transaction.on_commit(partial(run_enqueue, run.pk))
                report.requeued.append(run.pk)
            else:
                error = f"Run failed: {reason}."
                if stale.update(status=Run.Status.FAILED, error=error, finished_at=now, lease_expires_at=None) != 1:
                    continue
                _record(
                    run_id=run.pk,
                    event=(events.FAILED, {"status": Run.Status.FAILED, "error": error}),
                    action="run.failed",
                    actor=actor,
                    data={"error": error},
                )
                report.failed.append(run.pk)
    report.reenqueued = _reenqueue_lost(now)
    for run_id in report.requeued + report.failed:
        logger.warning("reaped run", extra={"run_id": run_id, "requeued": run_id in report.requeued})
    return report


# Queued runs the reaper looks at per pass, oldest first.
LOST_CHECK_BATCH = 500


def tasks_waiting(broker: Any, tasks: list[str]) -> set[str] | None:
    """Which of these tasks wait on the broker's run queue; None for a broker this cannot read.

    A Redis list is searched with LPOS (pipelined; LRANGE where the server predates it); the
    ORM queue's rows are queried by payload, a task a worker has taken but not yet
    acknowledged included."""
    from django_q.brokers.orm import ORM
    from django_q.brokers.redis_broker import Redis

    if not tasks:
        return set()
    if isinstance(broker, Redis):
        import redis

        client = broker.connection
        try:
            pipe = client.pipeline(transaction=False)
            for task in tasks:
                pipe.lpos(broker.list_key, task)
            return {task for task, position in zip(tasks, pipe.execute(), strict=True) if position is not None}
        except redis.ResponseError:  # no LPOS before Redis 6.0.6
            queued = {
                item.decode() if isinstance(item, bytes) else item for item in client.lrange(broker.list_key, 0, -1)
            }
            return queued & set(tasks)
    if isinstance(broker, ORM):
        rows = broker.get_connection().filter(key=broker.list_key, payload__in=tasks)
        return set(rows.values_list("payload", flat=True))
    return None


def _reenqueue_lost(now: datetime) -> list[str]:
    """Queued runs past HARNESS_REQUEUE_AFTER_SECONDS whose task is not on the run queue: the
    broker was down when they were made, or lost its data (a Redis restarted without
    persistence, flushed or failed over), however long the queue is meanwhile.

    The oldest LOST_CHECK_BATCH queued runs are looked for on the queue in one round trip. A
    run held back by the principal cap waits in a worker's memory, not on the queue, so the
    runs of an owner at the cap are left alone until the owner is below it (a lost one is
    enqueued again by a pass after that). A held run whose owner is below the cap for the
    moment may be enqueued again: the worker that holds it drops the repeat, another worker
    holds it too, and whichever claims it first runs it; the claim makes every repeat
    harmless, and there is at most one on the queue at a time."""
    cutoff = now - timedelta(seconds=settings.HARNESS_REQUEUE_AFTER_SECONDS)
    at_cap = (
        Run.objects.filter(status=Run.Status.RUNNING)
        .values("owner_id")
        .annotate(running=Count("id"))
        .filter(running__gte=settings.HARNESS_PRINCIPAL_MAX_INFLIGHT)
        .values("owner_id")
    )
    queued = Run.objects.filter(status=Run.Status.QUEUED, created_at__lt=cutoff).exclude(owner_id__in=at_cap)
    lost = list(queued.order_by("created_at", "id").values_list("id", flat=True)[:LOST_CHECK_BATCH])
    if not lost:
        return []
    broker = run_broker()
    try:
        waiting = tasks_waiting(broker, [f"{RUN_TASK_PREFIX}{run_id}" for run_id in lost])
        if waiting is None and broker.queue_size() > 0:
            return []  # a broker whose queue cannot be searched: only an empty queue says they are lost
    except Exception as exc:
        logger.warning("run queue unavailable: lost runs are enqueued again later", extra={"error": type(exc).__name__})
        return []
    missing = [run_id for run_id in lost if f"{RUN_TASK_PREFIX}{run_id}" not in (waiting or ())]
    # A worker may have taken a task between the two reads: its run is no longer queued once
    # the claim commits. (One taken in the few milliseconds before that is enqueued again: a
    # repeat the claim makes harmless.)
    still = set(Run.objects.filter(pk__in=missing, status=Run.Status.QUEUED).values_list("id", flat=True))
    lost = [run_id for run_id in missing if run_id in still]
    enqueued = []
    for run_id in lost:
        logger.warning("re-enqueueing a queued run whose task was lost", extra={"run_id": run_id})
        if not run_enqueue(run_id):
            break
        enqueued.append(run_id)
    return enqueued


class RunNotRetryable(RunServiceError):
    status_code = 409


@transaction.atomic
def run_retry(*, run: Run, actor: Actor) -> Run:
    """Run a finished run again: a new queued run with the same owner, agent, model, input,
    input files and limits (clamped again by today's maxima and the owner's budget), whose
    `retry_of` is the original; audited as `run.retried` (on both runs' trails) and enqueued.

    The retry continues the original's session, so it sees the conversation as it is now
    (with what the original added). While that session has a run in progress the retry is
    refused (SessionBusy, nothing written) rather than moved to a new session, which would
    silently drop the conversation; retry once that run is done or cancelled. A run that
    has not finished cannot be retried (RunNotRetryable); attached files that expired since
    refuse it too (InvalidFiles), and so does a budget (billing.services.BudgetError).
    """
    original = Run.objects.select_related("owner").get(pk=run.pk)
    if not original.is_finished:
        raise RunNotRetryable(f"run {original.pk} is {original.status}; only a finished run can be retried")
    asked: dict[str, Any] = {
        name: original.limits.get(name)
        for name in ("max_cost_usd", "max_tokens", "max_turns", "max_sandbox_seconds")
        if (original.limits or {}).get(name) is not None
    }
    if "max_cost_usd" in asked:
        asked["max_cost_usd"] = Decimal(str(asked["max_cost_usd"]))
    retry = run_create(
        owner=original.owner,
        actor=actor,
        input=original.input,
        agent=original.agent,
        model=original.model,
        session_id=original.session_id,
        files=list(original.input_files or []),
        origin="retry",
        limits=asked,
        retry_of=original,
        offline_script=original.offline_script,
    )
    audit_record(
        action="run.retried",
        actor=actor,
        target_type="run",
        target_id=original.pk,
        run_id=retry.pk,
        data={"retry_of": original.pk, "retry_id": retry.pk, "original_status": original.status},
    )
    return retry
