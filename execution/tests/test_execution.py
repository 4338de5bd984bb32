"""The worker's side: executing runs in-process through the same entry point the queue calls."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings
from django.utils import timezone

from audit.models import AuditLog
from audit.services import Actor
from conftest import make_run
from execution.executor import run_execute
from execution.memory import DjangoSession
from execution.offline import OfflineModel
from runs import services
from runs.models import Run, SessionItem, Span, Trace

pytestmark = pytest.mark.django_db(transaction=True)


def events_of(run: Run, *, deltas: bool = False) -> list[str]:
    kinds = run.events.order_by("seq").values_list("type", flat=True)
    return [kind for kind in kinds if deltas or kind != "text.delta"]


def streamed_text(run: Run) -> str:
    return "".join(event.data["text"] for event in run.events.filter(type="text.delta").order_by("seq"))


def test_an_offline_run_calls_a_real_tool_and_records_everything(alice):
    run = make_run(alice, input="What is 6 * 7?")
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.output == "6 * 7 = 42"
    assert run.error == ""
    assert (
        run.usage["requests"] == 2
        and run.usage["total_tokens"] == run.usage["input_tokens"] + run.usage["output_tokens"]
    )
    assert run.started_at <= run.finished_at and run.attempts == 1
    assert events_of(run) == [
        "run.queued",
        "run.started",
        "agent.updated",
        "tool.called",
        "tool.output",
        "message.created",
        "run.succeeded",
    ]
    seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    called = run.events.get(type="tool.called").data
    output = run.events.get(type="tool.output").data
    assert called["name"] == "calculate" and called["call_id"] == output["call_id"]
    assert output["output"] == "42" and output["name"] == "calculate"
    assert run.events.get(type="run.succeeded").data["output"] == "6 * 7 = 42"
    assert streamed_text(run) == "6 * 7 = 42"
    assert events_of(run, deltas=True).index("text.delta") < events_of(run, deltas=True).index("message.created")
    trace = Trace.objects.get(run=run)
    assert trace.id == run.trace_id and trace.metadata["run_id"] == run.pk
    kinds = sorted(Span.objects.filter(run=run).values_list("kind", flat=True))
    assert kinds.count("generation") == 2 and "agent" in kinds and "function" in kinds
    function_span = Span.objects.get(run=run, kind="function")
    assert function_span.name == "calculate" and function_span.data["output"] == "42"
    assert Span.objects.filter(run=run, kind="generation").first().usage["input_tokens"] > 0
    actions = list(AuditLog.objects.filter(run_id=run.pk).order_by("id").values_list("action", flat=True))
    assert actions == ["run.created", "run.started", "run.succeeded"]


def test_executing_twice_is_harmless(alice):
    run = make_run(alice)
    assert run_execute(run.pk) == "succeeded"
    assert run_execute(run.pk) is None
    assert Run.objects.get(pk=run.pk).attempts == 1


def test_a_session_continues_the_conversation_from_the_database(alice):
    first = make_run(alice, agent="assistant", input="hello there")
    run_execute(first.pk)
    second = make_run(alice, agent="assistant", input="and again", session_id=first.session_id)
    run_execute(second.pk)
    second.refresh_from_db()
    assert second.session_id == first.session_id
    assert second.output.startswith("Offline assistant, turn 2:")
    # A fresh session object (as after a restart) reads the whole history back.
    items = async_to_sync(DjangoSession(first.session_id).get_items)()
    user_messages = [item["content"] for item in items if item.get("role") == "user"]
    assert user_messages == ["hello there", "and again"]
    assert SessionItem.objects.filter(run=second).exists()


def test_without_an_openai_key_a_real_model_run_fails_clearly(alice):
    run = make_run(alice, model="gpt-5.4-mini")
    assert run_execute(run.pk) == "failed"
    run.refresh_from_db()
    assert run.status == "failed"
    assert "OPENAI_API_KEY" in run.error
    assert events_of(run)[-1] == "run.failed"
    assert "OPENAI_API_KEY" in run.events.get(type="run.failed").data["error"]
    assert AuditLog.objects.filter(run_id=run.pk, action="run.failed").exists()


def test_a_run_that_raises_fails_and_the_worker_carries_on(alice, monkeypatch):
    def explode(self, items, tool_names):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(OfflineModel, "respond", explode)
    run = make_run(alice)
    assert run_execute(run.pk) == "failed"
    run.refresh_from_db()
    assert run.error == "RuntimeError: model exploded"
    monkeypatch.undo()
    another = make_run(alice)
    assert run_execute(another.pk) == "succeeded"


@override_settings(HARNESS_RUN_TIMEOUT_SECONDS=0.5, HARNESS_OFFLINE_DELAY_MS=100)
def test_a_run_over_its_time_limit_fails(alice):
    run = make_run(alice, agent="assistant", input=" ".join(["word"] * 40))
    started = time.monotonic()
    assert run_execute(run.pk) == "failed"
    assert time.monotonic() - started < 3
    run.refresh_from_db()
    assert "timed out after 0.5 s" in run.error
    assert events_of(run)[-1] == "run.failed"


@override_settings(HARNESS_OFFLINE_DELAY_MS=50, HARNESS_CANCEL_CHECK_SECONDS=0.05)
def test_cancelling_a_running_run_stops_it(alice):
    run = make_run(alice, agent="assistant", input=" ".join(["word"] * 200))
    results: list[str | None] = []
    worker = threading.Thread(target=lambda: results.append(run_execute(run.pk)))
    worker.start()
    deadline = time.monotonic() + 10
    while Run.objects.get(pk=run.pk).status != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    cancelled = services.run_cancel(run=run, actor=Actor.system("tests"))
    cancelled_at = time.monotonic()
    assert cancelled.status == "cancelled"
    worker.join(timeout=10)
    assert not worker.is_alive()
    # 200 words at 50 ms each would take 10 s; the worker stopped within a few checks.
    assert time.monotonic() - cancelled_at < 2
    assert results == [None]
    run.refresh_from_db()
    assert run.status == "cancelled" and run.output is None
    kinds = events_of(run)
    assert kinds[-1] == "run.cancelled" and kinds.count("run.cancelled") == 1
    assert run.usage.get("requests", 0) >= 1
    assert list(AuditLog.objects.filter(run_id=run.pk).values_list("action", flat=True).order_by("id")) == [
        "run.created",
        "run.started",
        "run.cancelled",
    ]


@override_settings(HARNESS_OFFLINE_DELAY_MS=5, HARNESS_STREAM_COALESCE_MS=40)
def test_text_deltas_are_coalesced_not_written_per_token(alice):
    words = 120
    run = make_run(alice, agent="assistant", input=" ".join(f"w{i}" for i in range(words)))
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert streamed_text(run) == run.output
    written = run.events.filter(type="text.delta").count()
    # ~130 tokens over ~0.7 s at one write per 40 ms: a few dozen writes at most, not one per token.
    assert 1 < written < words / 3, written


def _claim_and_abandon(run: Run) -> None:
    """What a worker that died mid-run leaves behind: RUNNING with an expired lease."""
    services.run_claim(run_id=run.pk, worker_id="dead-host:1:deadbeef")
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_the_reaper_fails_a_run_whose_worker_died(alice):
    run = make_run(alice)
    _claim_and_abandon(run)
    report = services.run_reap()
    assert report.failed == [run.pk] and report.requeued == []
    run.refresh_from_db()
    assert run.status == "failed" and run.finished_at
    assert "stopped responding" in run.error and "dead-host:1:deadbeef" in run.error
    assert events_of(run)[-1] == "run.failed"
    audit = AuditLog.objects.get(run_id=run.pk, action="run.failed")
    assert audit.actor_type == "system" and audit.actor_label == "reaper"
    assert services.run_reap().failed == []


def test_the_reaper_leaves_live_runs_alone(alice):
    run = make_run(alice)
    services.run_claim(run_id=run.pk, worker_id="live:1:cafe")
    assert services.run_reap().failed == []
    assert Run.objects.get(pk=run.pk).status == "running"


@override_settings(HARNESS_RUN_MAX_ATTEMPTS=2)
def test_the_reaper_retries_within_the_attempt_limit(alice):
    run = make_run(alice, agent="assistant", input="remember me")
    _claim_and_abandon(run)
    # The lost attempt had already written to the conversation.
    SessionItem.objects.create(session_id=run.session_id, run=run, data={"role": "user", "content": "remember me"})
    report = services.run_reap()
    assert report.requeued == [run.pk]
    run.refresh_from_db()
    assert run.status == "queued"
    assert AuditLog.objects.filter(run_id=run.pk, action="run.requeued").count() == 1
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.attempts == 2
    assert "turn 1" in run.output  # the lost attempt's items were dropped, not repeated
    assert events_of(run)[:4] == ["run.queued", "run.started", "run.requeued", "run.started"]


def test_a_late_worker_cannot_write_after_the_final_event(alice):
    run = make_run(alice)
    services.run_claim(run_id=run.pk, worker_id="w:1:a")
    services.run_cancel(run=run, actor=Actor.system("tests"))
    assert services.run_record_events(run_id=run.pk, worker_id="w:1:a", batch=[("tool.called", {})]) is False
    assert services.run_heartbeat(run_id=run.pk, worker_id="w:1:a") is False
    won = services.run_finish(
        run_id=run.pk, worker_id="w:1:a", outcome=services.RunOutcome(status="succeeded", output="late")
    )
    assert won is False
    run.refresh_from_db()
    assert run.status == "cancelled" and run.output is None
    assert events_of(run)[-1] == "run.cancelled"
