"""HARNESS_SANDBOX_APPROVAL=always: every exec_command waits for a person; while a run waits
it holds no sandbox, and its workspace comes back from a snapshot on resume (bubblewrap)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.test import override_settings

from approvals.models import Approval, PausedRun
from approvals.services import approval_decide
from artifacts.models import Artifact
from artifacts.storage import artifact_storage
from audit.services import Actor
from conftest import make_run
from execution.executor import run_execute
from runs.models import Run
from sandboxes.models import Sandbox

pytestmark = pytest.mark.django_db(transaction=True)

TWO_STEPS = "```sh\necho 42 > state.txt && echo kept > outputs/kept.txt\n```\n```sh\ncat state.txt\n```"


def approve(run: Run) -> None:
    approval = Approval.objects.get(run=run, status="pending")
    approval_decide(
        run_id=run.pk, call_id=approval.call_id, decision="approve", message="", actor=Actor.system("t"), user=None
    )


@override_settings(HARNESS_SANDBOX_APPROVAL="always")
def test_each_command_waits_and_the_workspace_survives_the_wait(alice, bwrap):
    run = make_run(alice, agent="coder", input=TWO_STEPS)
    assert run_execute(run.pk) == "awaiting_approval"
    first = Approval.objects.get(run=run)
    assert first.tool == "exec_command" and "echo 42 > state.txt" in first.arguments["cmd"]
    # While it waits, no sandbox is live: the first one was destroyed, its workspace kept.
    sandbox = Sandbox.objects.get(run=run)
    assert sandbox.status == "stopped" and sandbox.cleanup_state == "done"
    assert sandbox.exit_info["reason"] == "run paused for approval: workspace kept as a snapshot"
    assert not any(bwrap.iterdir())
    paused = PausedRun.objects.get(run=run)
    assert paused.snapshot_key and artifact_storage().exists(paused.snapshot_key)

    approve(run)
    assert run_execute(run.pk) == "awaiting_approval"  # the second command waits in its turn
    second = Approval.objects.get(run=run, status="pending")
    assert second.arguments["cmd"] == "cat state.txt"
    paused.refresh_from_db()
    assert paused.pauses == 2
    assert Sandbox.objects.filter(run=run).count() == 2 and not any(bwrap.iterdir())

    approve(run)
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    # The file the first command wrote, in a sandbox since destroyed, was there for the second.
    assert "42" in run.output and "exited with code 0" in run.output
    sandboxes = Sandbox.objects.filter(run=run).order_by("id")
    assert sandboxes.count() == 3
    assert all(s.cleanup_state == "done" for s in sandboxes)
    assert sandboxes.last().manifest["restored_from"].startswith(f"snapshots/{run.pk}/")
    # outputs/ written before a pause still becomes an artifact when the run ends.
    assert list(Artifact.objects.filter(run=run).values_list("name", flat=True)) == ["kept.txt"]
    # The snapshots are gone with the paused state.
    assert not PausedRun.objects.filter(run=run).exists()
    assert not artifact_storage().exists(paused.snapshot_key)
    kinds = list(run.events.order_by("seq").values_list("type", flat=True))
    assert kinds.count("sandbox.started") == 3 and kinds.count("sandbox.stopped") == 3
    assert kinds.count("approval.requested") == 2 and kinds.count("run.resumed") == 2


@override_settings(HARNESS_SANDBOX_APPROVAL="never")
def test_by_default_commands_run_without_asking(alice, bwrap):
    run = make_run(alice, agent="coder", input="```sh\necho 6\n```")
    assert run_execute(run.pk) == "succeeded"
    assert not Approval.objects.filter(run=run).exists()


@override_settings(HARNESS_SANDBOX_APPROVAL="always", ARTIFACTS_MAX_BYTES=64)
def test_a_workspace_too_big_to_keep_fails_the_run_and_leaves_nothing(alice, bwrap):
    run = make_run(alice, agent="coder", input="```sh\necho 1\n```")
    assert run_execute(run.pk) == "failed"
    run.refresh_from_db()
    assert "larger than ARTIFACTS_MAX_BYTES" in run.error and "waits for approval" in run.error
    assert not Approval.objects.filter(run=run).exists() and not PausedRun.objects.filter(run=run).exists()
    assert Sandbox.objects.get(run=run).cleanup_state == "done" and not any(bwrap.iterdir())


def test_input_typed_into_a_running_process_waits_too_but_polling_does_not():
    """A shell or an interpreter started with an approved exec_command must not run what is typed
    into it unapproved."""
    from agents.sandbox.capabilities.shell import ShellToolSet
    from agents.sandbox.capabilities.tools.shell_tool import ExecCommandTool, WriteStdinTool

    from runs.registry import agent_get

    def configured(policy: str) -> ShellToolSet:
        spec = agent_get("coder")
        assert spec is not None
        with override_settings(HARNESS_SANDBOX_APPROVAL=policy):
            shell: Any = getattr(spec.build("offline"), "capabilities")[0]  # noqa: B009 (a SandboxAgent's)
        session: Any = object()  # the rule is set when the tools are configured, before any session use
        toolset = ShellToolSet(
            exec_command=ExecCommandTool(session=session), write_stdin=WriteStdinTool(session=session)
        )
        shell.configure_tools(toolset)
        return toolset

    gated = configured("always")
    assert gated.exec_command.needs_approval is True
    rule = gated.write_stdin.needs_approval
    assert callable(rule)
    assert asyncio.run(rule(None, {"session_id": 1, "chars": "rm -rf outputs\n"}, "call_1")) is True
    assert asyncio.run(rule(None, {"session_id": 1, "chars": ""}, "call_2")) is False
    assert asyncio.run(rule(None, {"session_id": 1}, "call_3")) is False
    open_ = configured("never")
    assert open_.exec_command.needs_approval is False and open_.write_stdin.needs_approval is False


@pytest.mark.parametrize("amount", ["nan", "inf", "-inf"])
def test_a_refund_of_no_finite_amount_asks_a_person_and_is_refused(amount):
    from runs.registry import refund, refund_needs_approval

    assert refund_needs_approval({"amount": float(amount)}) is True
    assert refund("A-1", float(amount), "x").startswith("error:")


def test_a_refund_asks_only_above_harness_refund_approval_over_usd(settings):
    from runs.registry import refund_needs_approval

    settings.HARNESS_REFUND_APPROVAL_OVER_USD = 100
    assert refund_needs_approval({"amount": 100}) is False  # at the threshold: no
    assert refund_needs_approval({"amount": 100.01}) is True
    settings.HARNESS_REFUND_APPROVAL_OVER_USD = 0
    assert refund_needs_approval({"amount": 0.01}) is True
