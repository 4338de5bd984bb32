"""Golden cases (promote, edit: every change a new version, with an audit row) and eval runs."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from audit.services import Actor, audit_record
from evals import graders
from evals.models import Dataset, EvalResult, EvalRun, GoldenCase, GoldenCaseVersion
from feedback.services import feedback_mark_reviewed
from runs.models import Run, SessionItem

logger = logging.getLogger(__name__)

EVAL_USERNAME = "eval-runner"
REPLAY, LIVE = "replay", "live"
LIVE_ONLY_REASON = "live-only: its run made no model calls, so there is nothing to replay (run it with --mode live)"


class EvalError(Exception):
    """A clear, user-facing reason an eval cannot run as asked."""


# --- golden cases ------------------------------------------------------------------------


def _audit(action: str, case: GoldenCase, actor: Actor, **data: Any) -> None:
    audit_record(
        action=action,
        actor=actor,
        target_type="golden_case",
        target_id=case.pk,
        run_id=case.source_run_id or "",
        data={"dataset": case.dataset_id, "version": case.version, **data},
    )


def _new_version(case: GoldenCase, user: User | None) -> GoldenCaseVersion:
    last = case.versions.aggregate(last=Max("version"))["last"] or 0
    case.version = last + 1
    GoldenCase.objects.filter(pk=case.pk).update(version=case.version)
    return GoldenCaseVersion.objects.create(case=case, version=case.version, data=case.snapshot(), created_by=user)


def run_facts(run: Run) -> dict[str, Any]:
    """What a golden case needs from a run: its input, history, output, tool calls and cassette."""
    earlier = SessionItem.objects.filter(session_id=run.session_id).exclude(run=run)
    history = list(earlier.filter(id__lt=_first_item_of(run)).order_by("id").values_list("data", flat=True))
    calls = graders.tool_calls_of(run)
    return {
        "agent": run.agent,
        "model": run.model,
        "input": run.input,
        "history": history,
        "output": run.output or "",
        "error": run.error,
        "tool_calls": calls,
        "cassette": list(run.model_calls or []),
    }


def _first_item_of(run: Run) -> int:
    first = SessionItem.objects.filter(run=run).order_by("id").values_list("id", flat=True).first()
    return first if first is not None else 2**62


def default_name(run: Run) -> str:
    words = re.sub(r"\s+", " ", run.input).strip()
    return f"{run.agent}: {words[:80]}"


@transaction.atomic
def golden_promote(
    *,
    run: Run,
    dataset_name: str,
    user: User,
    name: str | None = None,
    expected_output: str | None = None,
    output_match: str = GoldenCase.Match.CONTAINS,
    assertions: list[dict[str, Any]] | None = None,
    expected_tools: list[dict[str, Any]] | None = None,
    forbidden_tools: list[str] | None = None,
    tags: list[str] | None = None,
) -> GoldenCase:
    """Make a golden case from a run (its recorded cassette included) as version 1."""
    facts = run_facts(run)
    dataset, _ = Dataset.objects.get_or_create(name=dataset_name)
    case = GoldenCase.objects.create(
        dataset=dataset,
        name=name or default_name(run),
        agent=run.agent,
        model=run.model,
        input=run.input,
        history=facts["history"],
        expected_output=facts["output"] if expected_output is None else expected_output,
        output_match=output_match,
        assertions=assertions or [],
        expected_tools=(
            [{"name": call["name"]} for call in facts["tool_calls"]] if expected_tools is None else expected_tools
        ),
        forbidden_tools=forbidden_tools or [],
        cassette=facts["cassette"],
        tags=tags or [],
        source_run=run,
        promoted_by=user,
    )
    _new_version(case, user)
    _audit(
        "golden.promoted",
        case,
        Actor.for_user(user),
        run_status=run.status,
        cassette_steps=len(case.cassette),
    )
    # A promoted run has had its review: it leaves the feedback "needs review" queue.
    feedback_mark_reviewed(run_ids=[run.pk], user=user, actor=Actor.for_user(user), reason=f"promoted to {case.pk}")
    return case


@transaction.atomic
def golden_save(*, case: GoldenCase, user: User | None, actor: Actor) -> GoldenCase:
    """Save an edited (or new) case as a new version; earlier versions stay as they were."""
    creating = case._state.adding
    case.save()
    version = _new_version(case, user)
    _audit("golden.created" if creating else "golden.edited", case, actor, version=version.version)
    return case


# --- eval runs -------------------------------------------------------------------------


def eval_user() -> User:
    user, created = User.objects.get_or_create(username=EVAL_USERNAME, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


@dataclass
class CaseOutcome:
    case: GoldenCase
    version: GoldenCaseVersion
    result: EvalResult


def _cases(datasets: list[str] | None, agent: str | None) -> list[GoldenCase]:
    cases = GoldenCase.objects.filter(active=True).select_related("dataset")
    if datasets:
        known = set(Dataset.objects.filter(name__in=datasets).values_list("name", flat=True))
        unknown = [name for name in datasets if name not in known]
        if unknown:
            names = ", ".join(Dataset.objects.values_list("name", flat=True)) or "none"
            raise EvalError(f"unknown dataset(s): {', '.join(unknown)} (datasets: {names})")
        cases = cases.filter(dataset__name__in=datasets)
    if agent:
        cases = cases.filter(agent=agent)
    return list(cases.order_by("dataset__name", "id"))


def eval_run(
    *,
    datasets: list[str] | None = None,
    mode: str = REPLAY,
    agent: str | None = None,
    repeat: int = 1,
    min_pass_rate: float | None = None,
    triggered_by: str = "manage.py eval",
    progress: Callable[[EvalResult], None] | None = None,
) -> EvalRun:
    """Run every active golden case through the harness's own runner, grade it, store the results."""
    from execution.catalog import catalog

    agent_names = sorted(catalog())  # the agents this process runs the cases with
    if mode not in (REPLAY, LIVE):
        raise EvalError(f"mode must be 'replay' or 'live', not {mode!r}")
    if repeat < 1:
        raise EvalError("repeat must be at least 1")
    if agent and agent not in agent_names:
        raise EvalError(f"unknown agent {agent!r}; valid agents: {', '.join(agent_names)}")
    threshold = settings.HARNESS_EVAL_MIN_PASS_RATE if min_pass_rate is None else min_pass_rate
    if not 0 <= threshold <= 1:
        raise EvalError("the minimum pass rate must be between 0 and 1")
    cases = _cases(datasets, agent)
    evaluation = EvalRun.objects.create(
        datasets=sorted({case.dataset.name for case in cases}) or list(datasets or []),
        mode=mode,
        agent=agent or "",
        repeat=repeat,
        min_pass_rate=threshold,
        triggered_by=triggered_by[:150],
    )
    audit_record(
        action="eval.started",
        actor=Actor.system(triggered_by),
        target_type="eval_run",
        target_id=evaluation.pk,
        data={"datasets": evaluation.datasets, "mode": mode, "cases": len(cases), "repeat": repeat},
    )
    user = eval_user()
    for case in cases:
        version = case.versions.order_by("-version").first()
        if version is None:  # a case saved outside the services; give it its first version
            version = _new_version(case, None)
        if mode == REPLAY and not version.data.get("cassette"):
            # A live-only case (its run made no model calls): nothing to replay, so it is
            # skipped, said on the eval run and by the CLI, and counts for neither side.
            evaluation.skipped.append(
                {"case": case.pk, "name": case.name, "dataset": case.dataset.name, "reason": LIVE_ONLY_REASON}
            )
            logger.warning("eval: live-only case skipped in replay", extra={"case": case.pk})
            continue
        outputs: list[str | None] = []
        for attempt in range(1, repeat + 1):
            result = _run_case(evaluation, case, version, attempt, user, mode)
            outputs.append(result.output)
            if attempt > 1 and result.passed and outputs[0] != result.output:
                result.passed = False
                result.reasons = [
                    *result.reasons,
                    f"not deterministic: attempt {attempt}'s output differs from attempt 1's",
                ]
                result.save(update_fields=["passed", "reasons"])
            if progress:
                progress(result)
    results = evaluation.results.all()
    evaluation.total = results.count()
    evaluation.passed = results.filter(passed=True).count()
    evaluation.finished_at = timezone.now()
    # The default threshold (1.0) fails the eval on any failing case; a lower one tolerates some
    # (e.g. live mode against a real model).
    ok = evaluation.total > 0 and evaluation.pass_rate >= threshold
    evaluation.status = EvalRun.Status.PASSED if ok else EvalRun.Status.FAILED
    evaluation.save()
    audit_record(
        action=f"eval.{evaluation.status}",
        actor=Actor.system(triggered_by),
        target_type="eval_run",
        target_id=evaluation.pk,
        data={"passed": evaluation.passed, "total": evaluation.total},
    )
    return evaluation


def _create_case_run(evaluation: EvalRun, data: dict[str, Any], user: User, mode: str) -> Run:
    from runs.services import run_create

    with transaction.atomic():
        return run_create(
            owner=user,
            actor=Actor.system(f"eval {evaluation.pk}"),
            input=data["input"],
            agent=data["agent"],
            # A replay says so on the run: it plays back what this model once answered.
            model=data["model"] if mode == LIVE else f"replay:{data['model']}"[:100],
            history=data.get("history") or [],
            origin="eval",
            enqueue=False,
        )


def _run_case(
    evaluation: EvalRun, case: GoldenCase, version: GoldenCaseVersion, attempt: int, user: User, mode: str
) -> EvalResult:
    from billing.services import BudgetError
    from execution.executor import run_execute

    data = version.data
    started = time.monotonic()
    reasons: list[str] = []
    run: Run | None = None
    replay = data.get("cassette") or []
    try:
        run = _create_case_run(evaluation, data, user, mode)
    except BudgetError as exc:
        # The eval's principal is out of budget (or the model cannot be held to one): this
        # case fails with the reason; the eval goes on.
        reasons.append(f"the run was refused: {exc}")
    if run is not None:
        run_execute(run.pk, replay=replay if mode == REPLAY else None)
        run.refresh_from_db()
        if run.status != Run.Status.SUCCEEDED:
            reasons.append(f"the run {run.status}: {run.error}" if run.error else f"the run {run.status}")
        if run.status == Run.Status.SUCCEEDED or "replay diverged" not in run.error:
            reasons += graders.grade_output(data, run.output)
            reasons += graders.grade_tools(data, graders.tool_calls_of(run))
            reasons += graders.grade_trace(run)
    return EvalResult.objects.create(
        eval_run=evaluation,
        case=case,
        case_version=version,
        attempt=attempt,
        run=run,
        passed=not reasons,
        reasons=reasons,
        output=(run.output or "") if run else "",
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
