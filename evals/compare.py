"""What changed: an eval run against the one before it, a golden case between its versions, and
the pass rate of each dataset over the latest eval runs.

Every function here reads a fixed number of queries whatever the number of results, cases or
versions, and returns plain data; the admin renders it (Django escapes every text there) and
draws the trend with harness_site.svg.

Diffs are line-based (difflib's unified format) over at most HARNESS_EVAL_DIFF_MAX_CHARS of
each side, so a huge output costs a bounded amount of time.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils.safestring import SafeString

from evals.models import EvalResult, EvalRun, GoldenCase, GoldenCaseVersion

NEWLY_FAILING, FIXED, STILL_FAILING, ADDED, REMOVED = "newly_failing", "fixed", "still_failing", "added", "removed"


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "hunk" (@@ ... @@), "add", "del", "ctx" or "note"
    text: str


def text_diff(before: str, after: str, *, max_chars: int | None = None) -> list[DiffLine]:
    """A unified diff of two texts, line by line ([] when they are equal)."""
    limit = settings.HARNESS_EVAL_DIFF_MAX_CHARS if max_chars is None else max_chars
    if before == after:
        return []
    lines: list[DiffLine] = []
    clipped = len(before) > limit or len(after) > limit
    before, after = before[:limit], after[:limit]
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=3):
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            lines.append(DiffLine("hunk", line))
        elif line.startswith("+"):
            lines.append(DiffLine("add", line[1:]))
        elif line.startswith("-"):
            lines.append(DiffLine("del", line[1:]))
        else:
            lines.append(DiffLine("ctx", line[1:]))
    if not lines:  # equal in the compared part
        lines.append(DiffLine("note", "no difference in the compared characters"))
    if clipped:
        lines.append(DiffLine("note", f"compared the first {limit} characters of each (HARNESS_EVAL_DIFF_MAX_CHARS)"))
    return lines


# --- an eval run against the previous one --------------------------------------------


@dataclass
class CaseOutcome:
    """A case's result in one eval run: failed if any attempt failed."""

    case_id: str
    name: str
    dataset: str
    version: int
    passed: bool
    output: str
    reasons: list[str]
    run_id: str | None
    attempts: int


@dataclass
class CaseChange:
    kind: str
    case_id: str
    name: str
    dataset: str
    before: CaseOutcome | None
    after: CaseOutcome | None
    diff: list[DiffLine] = field(default_factory=list)

    @property
    def edited(self) -> bool:
        """The case was edited between the two eval runs (they ran different versions)."""
        return bool(self.before and self.after and self.before.version != self.after.version)


@dataclass
class Comparison:
    current: EvalRun
    previous: EvalRun | None
    newly_failing: list[CaseChange] = field(default_factory=list)
    fixed: list[CaseChange] = field(default_factory=list)
    still_failing: list[CaseChange] = field(default_factory=list)
    added: list[CaseChange] = field(default_factory=list)
    removed: list[CaseChange] = field(default_factory=list)
    still_passing: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.newly_failing or self.fixed or self.added or self.removed)


def previous_eval_run(evaluation: EvalRun) -> EvalRun | None:
    """The latest finished eval run before this one of the same datasets, mode and agent filter."""
    return (
        EvalRun.objects.filter(
            mode=evaluation.mode, agent=evaluation.agent, datasets=evaluation.datasets, id__lt=evaluation.pk
        )
        .exclude(status=EvalRun.Status.RUNNING)
        .order_by("-id")
        .first()
    )


def _outcomes(results: Iterable[EvalResult]) -> dict[str, CaseOutcome]:
    outcomes: dict[str, CaseOutcome] = {}
    for result in results:
        seen = outcomes.get(result.case_id)
        if seen is None:
            outcomes[result.case_id] = CaseOutcome(
                case_id=result.case_id,
                name=result.case.name,
                dataset=result.case.dataset.name,
                version=result.case_version.version,
                passed=result.passed,
                output=result.output,
                reasons=list(result.reasons),
                run_id=result.run_id,
                attempts=1,
            )
            continue
        seen.attempts += 1
        if seen.passed and not result.passed:
            seen.passed, seen.reasons, seen.output, seen.run_id = (
                False,
                list(result.reasons),
                result.output,
                result.run_id,
            )
    return outcomes


def _results(evaluation_ids: list[str]) -> dict[str, dict[str, CaseOutcome]]:
    results = (
        EvalResult.objects.filter(eval_run_id__in=evaluation_ids)
        .select_related("case__dataset", "case_version")
        .defer("case__cassette", "case__history", "case_version__data", "case__input", "case__expected_output")
        .order_by("eval_run_id", "id")
    )
    by_run: dict[str, list[EvalResult]] = {pk: [] for pk in evaluation_ids}
    for result in results:
        by_run[result.eval_run_id].append(result)
    return {pk: _outcomes(rows) for pk, rows in by_run.items()}


def eval_compare(evaluation: EvalRun, previous: EvalRun | None = None) -> Comparison:
    """What changed since `previous` (by default the previous eval run of the same datasets and mode).

    Three queries whatever the number of results: the previous run, then both runs' results.
    """
    if previous is None:
        previous = previous_eval_run(evaluation)
    comparison = Comparison(current=evaluation, previous=previous)
    if previous is None:
        return comparison
    outcomes = _results([evaluation.pk, previous.pk])
    now, before = outcomes[evaluation.pk], outcomes[previous.pk]
    for case_id, after in now.items():
        old = before.get(case_id)
        if old is None:
            comparison.added.append(CaseChange(ADDED, case_id, after.name, after.dataset, None, after))
            continue
        if old.passed and after.passed:
            comparison.still_passing += 1
            continue
        kind = FIXED if after.passed else (STILL_FAILING if not old.passed else NEWLY_FAILING)
        change = CaseChange(kind, case_id, after.name, after.dataset, old, after, text_diff(old.output, after.output))
        {NEWLY_FAILING: comparison.newly_failing, FIXED: comparison.fixed, STILL_FAILING: comparison.still_failing}[
            kind
        ].append(change)
    for case_id, old in before.items():
        if case_id not in now:
            comparison.removed.append(CaseChange(REMOVED, case_id, old.name, old.dataset, old, None))
    return comparison


# --- a golden case between its versions ------------------------------------------------

# Fields shown as "before → after" rather than as a diff.
SHORT_FIELDS = ("name", "agent", "model", "output_match", "active")
TEXT_FIELDS = ("input", "expected_output")


@dataclass
class FieldChange:
    field: str
    before: str
    after: str
    diff: list[DiffLine]


@dataclass
class VersionDiff:
    version: int
    previous: int
    created_at: datetime
    created_by: str
    changes: list[FieldChange]


def _as_text(name: str, value: Any) -> str:
    if name in TEXT_FIELDS or name in SHORT_FIELDS:
        return "" if value is None else str(value)
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def version_diffs(case: GoldenCase, *, limit: int | None = None) -> tuple[list[VersionDiff], bool]:
    """The changes between consecutive versions, newest first; True when older ones were left out.

    One query: the latest `limit` + 1 versions (HARNESS_EVAL_VERSION_DIFFS).
    """
    count = settings.HARNESS_EVAL_VERSION_DIFFS if limit is None else limit
    versions = list(
        GoldenCaseVersion.objects.filter(case=case).select_related("created_by").order_by("-version")[: count + 1]
    )
    diffs: list[VersionDiff] = []
    for newer, older in zip(versions, versions[1:], strict=False):
        changes = []
        for name in GoldenCase.VERSIONED_FIELDS:
            before, after = _as_text(name, older.data.get(name)), _as_text(name, newer.data.get(name))
            if before == after:
                continue
            if name in SHORT_FIELDS:
                changes.append(FieldChange(name, before, after, []))
            else:
                changes.append(FieldChange(name, "", "", text_diff(before, after)))
        diffs.append(
            VersionDiff(
                version=newer.version,
                previous=older.version,
                created_at=newer.created_at,
                created_by=newer.created_by.get_username() if newer.created_by else "system",
                changes=changes,
            )
        )
    more = len(versions) > count and versions[-1].version > 1
    return diffs, more


# --- the pass rate over time ---------------------------------------------------------------


@dataclass
class Trend:
    labels: list[str]  # one per eval run, oldest first
    eval_runs: list[str]
    series: dict[str, list[float | None]]  # "dataset" or "dataset (live)" -> pass rate per eval run


def _series_name(dataset: str, mode: str) -> str:
    return dataset if mode == "replay" else f"{dataset} ({mode})"


def pass_rate_trend(*, dataset: str | None = None, limit: int | None = None) -> Trend:
    """Each dataset's pass rate (its cases' results only) in the latest `limit` finished eval runs.

    With `dataset`, that dataset alone over the latest eval runs that ran it. Two queries.
    """
    count = settings.HARNESS_EVAL_TREND_RUNS if limit is None else limit
    finished = EvalRun.objects.exclude(status=EvalRun.Status.RUNNING)
    if dataset is not None:
        finished = finished.filter(pk__in=EvalResult.objects.filter(case__dataset__name=dataset).values("eval_run_id"))
    runs = list(finished.order_by("-id").only("id", "mode", "started_at")[:count])[::-1]
    rates = (
        EvalResult.objects.filter(eval_run_id__in=[run.pk for run in runs])
        .order_by()
        .values("eval_run_id", "case__dataset__name")
        .annotate(total=Count("id"), passed=Count("id", filter=Q(passed=True)))
    )
    if dataset is not None:
        rates = rates.filter(case__dataset__name=dataset)
    index = {run.pk: i for i, run in enumerate(runs)}
    modes = {run.pk: run.mode for run in runs}
    series: dict[str, list[float | None]] = {}
    for row in rates:
        name = _series_name(row["case__dataset__name"], modes[row["eval_run_id"]])
        values = series.setdefault(name, [None] * len(runs))
        values[index[row["eval_run_id"]]] = row["passed"] / row["total"] if row["total"] else None
    return Trend(
        labels=[run.started_at.strftime("%m-%d %H:%M:%S") for run in runs],
        eval_runs=[run.pk for run in runs],
        series=dict(sorted(series.items())),
    )


def trend_chart(trend: Trend, *, title: str) -> SafeString:
    """The trend as an inline SVG line chart (harness_site.svg), "" with fewer than one eval run."""
    from harness_site.svg import Series, line_chart

    if not trend.labels or not trend.series:
        return SafeString("")
    return line_chart(
        trend.labels,
        [Series(name, values) for name, values in trend.series.items()],
        title=title,
        y_max=1,
        value_format=lambda value: f"{value:.0%}",
        max_labels=8,
    )
