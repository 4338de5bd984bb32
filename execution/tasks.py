"""The run task as django-q2 sees it.

Runs travel on their own broker queue (HARNESS_RUN_QUEUE) to the run engine
(execution/engine.py), which reads the run id from the task and executes it on its
event loop. Should a plain django-q2 worker ever take such a task, this function
executes the run in that process instead: claims make either way safe.
"""

from __future__ import annotations


def execute_run(run_id: str) -> str | None:
    from execution.executor import run_execute

    return run_execute(run_id)
