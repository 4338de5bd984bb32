"""django-q2 task entry points."""

from __future__ import annotations


def run_eval(
    datasets: list[str] | None = None, mode: str = "replay", triggered_by: str = "schedule"
) -> dict[str, object]:
    from evals.services import eval_run

    evaluation = eval_run(datasets=datasets or None, mode=mode, triggered_by=triggered_by)
    return {
        "eval_run": evaluation.pk,
        "status": evaluation.status,
        "passed": evaluation.passed,
        "total": evaluation.total,
    }


def nightly_eval() -> dict[str, object]:
    return run_eval(None, "replay", "nightly schedule")
