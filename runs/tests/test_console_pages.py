"""The admin's run page, run list and session page, with real runs and the test client."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client, TestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from audit.models import AuditLog
from audit.services import Actor
from conftest import Principal, make_principal, make_run
from execution.executor import run_execute
from runs import services
from runs.models import Run, RunEvent, Span, Trace


def page_url(run: Run) -> str:
    return reverse("admin:runs_run_change", args=[quote(run.pk)])


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(operator):
    return client_for(operator)


@pytest.mark.django_db(transaction=True)
class TestTheRunPage:
    def test_a_calculator_run_with_a_tool_error_reads_as_a_conversation(self, staff_client, alice):
        run = make_run(alice, input="What is 1/0?")
        run_execute(run.pk)
        html = staff_client.get(page_url(run)).content.decode()
        # Header.
        assert 'id="run-status">Succeeded<' in html and "calculator" in html and "offline" in html
        assert ">alice<" in html and run.session_id in html and "watch this run's events live" in html
        assert reverse("run-live", args=[run.pk]) in html
        # Transcript: the input, the tool call highlighted as an error, the answer; no delta rows.
        assert "What is 1/0?" in html and escape('calculate({"expression": "1/0"})') in html
        assert 'class="rc-entry rc-tool rc-error" data-event="tool.called → tool.output"' in html
        assert "I could not evaluate 1/0: division by zero." in html
        assert 'data-event="text.delta"' not in html and 'data-event="run.succeeded"' in html
        assert "1 tool error, 1 failed span" in html
        # Trace tree and waterfall: every span, with its detail.
        spans = list(Span.objects.filter(run=run))
        assert len(spans) >= 5
        for span in spans:
            assert f'id="span-{span.pk}"' in html
        assert '<details class="rc-span rc-error" id="span-' in html  # the function span
        assert "&quot;content&quot;: &quot;What is 1/0?&quot;" in html  # a generation's input
        # The audit trail.
        assert "run.created" in html and "run.started" in html and "run.succeeded" in html

    def test_the_run_page_has_a_fixed_number_of_queries(self, staff_client, alice):
        # (the same with many events and spans: TestRunPageQueries below)
        run = make_run(alice)
        run_execute(run.pk)
        with CaptureQueriesContext(connection) as queries:
            assert staff_client.get(page_url(run)).status_code == 200
        assert len(queries) <= 16

    def test_a_running_run_shows_its_streamed_text_and_a_cancel_button(self, staff_client, alice):
        run = make_run(alice, agent="assistant", input="hello there")
        Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, started_at=timezone.now())
        from runs.events import events_append

        events_append(run_id=run.pk, events=[("message.created", {"text": "first"})])
        events_append(run_id=run.pk, events=[("text.delta", {"text": "second, half"})])
        html = staff_client.get(page_url(run)).content.decode()
        assert "second, half" in html and "still streaming" in html and 'id="cancel-run"' in html
        assert 'id="retry-run"' not in html and "No spans yet" in html

    def test_cancel_from_the_page(self, staff_client, alice, operator):
        run = make_run(alice)
        url = reverse("admin:runs_run_cancel", args=[quote(run.pk)])
        assert staff_client.get(url).status_code == 403  # a button: POST only
        response = staff_client.post(url, follow=True)
        assert f"Cancelled run {run.pk}." in response.content.decode()
        run.refresh_from_db()
        assert run.status == "cancelled" and run.error == "cancelled by operator operator"
        assert AuditLog.objects.filter(action="run.cancelled", target_id=run.pk, actor_id=str(operator.pk)).exists()
        again = staff_client.post(url, follow=True).content.decode()
        assert "already cancelled" in again
        assert 'id="cancel-run"' not in again and 'id="retry-run"' in again

    def test_retry_from_the_page_makes_a_linked_run_in_the_same_session(self, staff_client, alice, operator):
        run = make_run(alice, input="What is 1/0?", limits={"max_turns": 4})
        run_execute(run.pk)
        url = reverse("admin:runs_run_retry", args=[quote(run.pk)])
        response = staff_client.post(url, follow=True)
        retry = Run.objects.get(retry_of=run)
        assert response.redirect_chain[-1][0] == page_url(retry)
        html = response.content.decode()
        assert f"Retrying run {run.pk} as {retry.pk}." in html and 'id="run-retry-of"' in html
        assert (retry.owner, retry.agent, retry.model, retry.input, retry.session_id, retry.origin) == (
            run.owner,
            run.agent,
            run.model,
            run.input,
            run.session_id,
            "retry",
        )
        assert retry.limits["max_turns"] == 4 and retry.status == "queued"
        audit = AuditLog.objects.get(action="run.retried")
        assert (audit.target_id, audit.run_id, audit.actor_id) == (run.pk, retry.pk, str(operator.pk))
        assert retry.pk in staff_client.get(page_url(run)).content.decode()  # "retried as"
        run_execute(retry.pk)
        retry.refresh_from_db()
        assert retry.status == "succeeded" and "division by zero" in retry.output

    def test_retry_is_refused_for_unfinished_runs_and_busy_sessions(self, staff_client, alice):
        queued = make_run(alice)
        with pytest.raises(services.RunNotRetryable):
            services.run_retry(run=queued, actor=Actor.system("tests"))
        done = make_run(alice)
        run_execute(done.pk)
        busy = make_run(alice, session_id=done.session_id)
        response = staff_client.post(reverse("admin:runs_run_retry", args=[quote(done.pk)]), follow=True)
        assert f"already has a run in progress ({busy.pk})" in response.content.decode()
        assert not Run.objects.filter(retry_of=done).exists()
        assert not AuditLog.objects.filter(action="run.retried").exists()

    def test_a_viewer_sees_no_buttons_and_cannot_act(self, viewer, alice):
        run = make_run(alice)
        client = client_for(viewer)
        html = client.get(page_url(run)).content.decode()
        assert 'id="cancel-run"' not in html and "Promote to golden" not in html
        assert client.post(reverse("admin:runs_run_cancel", args=[quote(run.pk)])).status_code == 403
        run_execute(run.pk)
        assert 'id="retry-run"' not in client.get(page_url(run)).content.decode()
        assert client.post(reverse("admin:runs_run_retry", args=[quote(run.pk)])).status_code == 403
        assert not Run.objects.filter(retry_of=run).exists()

    def test_an_operator_with_only_the_retry_permission_can_retry(self, alice):
        user = User.objects.create_user("retrier", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__in=["view_run", "retry_run"]))
        run = make_run(alice)
        run_execute(run.pk)
        client = client_for(user)
        html = client.get(page_url(run)).content.decode()
        assert 'id="retry-run"' in html and 'id="cancel-run"' not in html
        assert client.post(reverse("admin:runs_run_retry", args=[quote(run.pk)])).status_code == 302
        assert Run.objects.filter(retry_of=run).count() == 1

    def test_the_page_cannot_be_saved(self, staff_client, alice):
        run = make_run(alice)
        assert staff_client.post(page_url(run), {"input": "changed"}).status_code == 405
        run.refresh_from_db()
        assert run.input == "What is 6 * 7?"

    def test_a_span_whole_as_json(self, staff_client, viewer, alice, outsider):
        run = make_run(alice)
        run_execute(run.pk)
        span = Span.objects.filter(run=run, kind="function").get()
        url = reverse("admin:runs_run_span", args=[quote(run.pk), span.pk])
        body = staff_client.get(url).json()
        assert body["data"]["output"] == "42" and body["kind"] == "function"
        assert client_for(viewer).get(url).status_code == 200
        other = make_run(outsider)
        assert staff_client.get(reverse("admin:runs_run_span", args=[quote(other.pk), span.pk])).status_code == 404
        assert Client().get(url).status_code == 302  # to the login page

    def test_sandbox_events_become_a_command_table(self, staff_client, alice):
        run = make_run(alice, agent="coder", input="$ echo hi")
        from runs.events import events_append

        output = "Chunk ID: 1\nWall time: 0.0100 seconds\nProcess exited with code 3\nOutput:\nhi\n"
        events_append(
            run_id=run.pk,
            events=[
                ("sandbox.started", {"sandbox_id": "sbx_x", "provider": "local"}),
                ("tool.called", {"call_id": "c", "name": "exec_command", "arguments": '{"cmd": "echo hi; exit 3"}'}),
                ("tool.output", {"call_id": "c", "name": "exec_command", "output": output}),
            ],
        )
        html = staff_client.get(page_url(run)).content.decode()
        assert 'id="sandbox-commands"' in html and "echo hi; exit 3" in html
        assert '<tr class="rc-error">' in html and '<td class="rc-exit">3</td>' in html


@pytest.mark.django_db
class TestRunList:
    def test_input_preview_sortable_columns_and_a_fixed_query_count(self, staff_client, alice):
        for index in range(3):
            make_run(alice, input=f"question {index} " + "x" * 200)
        url = reverse("admin:runs_run_changelist")
        with CaptureQueriesContext(connection) as few:
            html = staff_client.get(url).content.decode()
        assert "question 2 " + "x" * 68 + "…" in html and "x" * 200 not in html
        for _ in range(20):
            make_run(alice)
        with CaptureQueriesContext(connection) as many:
            assert staff_client.get(url).status_code == 200
        assert len(few) == len(many) <= 13
        for order in ("o=8", "o=-8", "o=9", "o=-10"):  # duration, tokens, cost
            assert staff_client.get(f"{url}?{order}").status_code == 200

    def test_duration_sorts_by_finished_minus_started(self, staff_client, alice):
        now = timezone.now()
        quick, slow = make_run(alice), make_run(alice)
        Run.objects.filter(pk=quick.pk).update(started_at=now, finished_at=now + timedelta(seconds=1))
        Run.objects.filter(pk=slow.pk).update(started_at=now, finished_at=now + timedelta(seconds=9))
        html = staff_client.get(reverse("admin:runs_run_changelist") + "?o=-8").content.decode()
        assert html.index(slow.pk) < html.index(quick.pk)
        assert "9.00 s" in html and "1.00 s" in html


@pytest.mark.django_db(transaction=True)
def test_the_list_filters_on_tools_called_and_tool_errors(staff_client, alice):
    error_run = make_run(alice, input="What is 1/0?")
    ok_run = make_run(alice, input="What is 2 + 2?")
    text_run = make_run(alice, agent="assistant", input="count me")
    for run in (error_run, ok_run, text_run):
        run_execute(run.pk)
    # A tool that raised: recorded on its span only.
    raised = make_run(alice, input="What is 3 + 3?")
    trace = Trace.objects.create(id="trace_raised", run=raised, workflow_name="w")
    Span.objects.create(id="span_raised", trace=trace, run=raised, kind="function", name="calculate", error={"m": 1})
    url = reverse("admin:runs_run_changelist")

    def listed(query: str) -> set[str]:
        html = staff_client.get(f"{url}?{query}").content.decode()
        return {run.pk for run in (error_run, ok_run, text_run, raised) if run.pk in html}

    page = staff_client.get(url).content.decode()
    assert "?tool=calculate" in page and "?tool=text_stats" in page and "?tool=exec_command" in page
    assert listed("tool=calculate") == {error_run.pk, ok_run.pk}
    assert listed("tool=text_stats") == {text_run.pk}
    assert listed("tool_error=yes") == {error_run.pk, raised.pk}
    assert listed("tool_error=no") == {ok_run.pk, text_run.pk}
    assert listed("tool=calculate&tool_error=yes") == {error_run.pk}


@pytest.mark.django_db(transaction=True)
def test_a_session_reads_as_its_conversation(staff_client, alice):
    first = make_run(alice, input="What is 2 + 2?")
    run_execute(first.pk)
    second = make_run(alice, input="And 1/0?", session_id=first.session_id)
    run_execute(second.pk)
    failed = make_run(alice, input="What is 5 * 5?", session_id=first.session_id)
    Run.objects.filter(pk=failed.pk).update(status="failed", error="the model was unavailable")
    html = staff_client.get(reverse("admin:runs_session_change", args=[quote(first.session_id)])).content.decode()
    order = [html.index(text) for text in ("What is 2 + 2?", "2 + 2 = 4", "And 1/0?", "division by zero", "5 * 5")]
    assert order == sorted(order)
    assert escape('calculate({"expression": "2 + 2"}) → 4') in html
    assert '<div class="rc-entry rc-tool rc-error">' in html  # 1/0
    assert "the model was unavailable" in html
    for run in (first, second, failed):
        assert page_url(run) in html
    listing = staff_client.get(reverse("admin:runs_session_changelist")).content.decode()
    assert "What is 2 + 2?" in listing


class TestRunPageQueries(TestCase):
    """The run page costs the same number of queries with 5 or 200 events and spans."""

    operator: User
    alice: Principal

    @classmethod
    def setUpTestData(cls) -> None:
        cls.operator = User.objects.create_superuser("root", password="pw-123456789")
        cls.alice = make_principal("alice")

    def make_big_run(self, size: int) -> Run:
        run = make_run(self.alice)
        start = timezone.now()
        trace = Trace.objects.create(id=f"trace_{run.pk}", run=run, workflow_name="w", started_at=start)
        spans = [
            Span(
                id=f"span_{run.pk}_{index}",
                trace=trace,
                run=run,
                parent_id=f"span_{run.pk}_{index - 1}" if index else "",
                kind="function" if index % 2 else "generation",
                name="calculate",
                started_at=start + timedelta(milliseconds=index),
                ended_at=start + timedelta(milliseconds=index + 1),
                duration_ms=1.0,
                data={"input": '{"expression": "1/0"}', "output": "error: division by zero" if index % 3 else "1"},
            )
            for index in range(size)
        ]
        Span.objects.bulk_create(spans)
        kinds = ["tool.called", "tool.output", "text.delta", "message.created"]
        RunEvent.objects.bulk_create(
            RunEvent(run=run, seq=2 + index, type=kinds[index % 4], data={"call_id": str(index // 4), "text": "w "})
            for index in range(size)
        )
        AuditLog.objects.bulk_create(
            AuditLog(action="run.note", actor_type="system", target_type="run", target_id=run.pk, run_id=run.pk)
            for _ in range(size)
        )
        return run

    def count(self, run: Run) -> int:
        client = Client()
        client.force_login(self.operator)
        client.get(page_url(run))  # warm caches (content types, sessions) out of the count
        with CaptureQueriesContext(connection) as queries:
            response = client.get(page_url(run))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content.decode().count('<details class="rc-span'), len(run.spans.all()))
        return len(queries)

    def test_each_kind_of_row_stops_at_harness_console_max_rows_and_says_so(self) -> None:
        client = Client()
        client.force_login(self.operator)
        with self.settings(HARNESS_CONSOLE_MAX_ROWS=10):
            at_limit = client.get(page_url(self.make_big_run(10))).content.decode()
            over = client.get(page_url(self.make_big_run(11))).content.decode()
        self.assertEqual(at_limit.count('<details class="rc-span'), 10)
        self.assertNotIn("only the first 10 spans are shown", at_limit)
        self.assertEqual(over.count('<details class="rc-span'), 10)
        self.assertIn("only the first 10 spans are shown", over)
        self.assertIn("the first 10 entries", over)  # the audit trail

    def test_the_count_does_not_grow_with_events_spans_or_audit_rows(self) -> None:
        small, big = self.make_big_run(5), self.make_big_run(200)
        self.assertEqual(self.count(small), self.count(big))

    def session_count(self, runs: int) -> int:
        first = make_run(self.alice)
        for _ in range(runs - 1):
            Run.objects.filter(session_id=first.session_id).update(status=Run.Status.SUCCEEDED)
            run = make_run(self.alice, session_id=first.session_id)
            RunEvent.objects.bulk_create(
                [
                    RunEvent(run=run, seq=2, type="tool.called", data={"call_id": "c", "name": "calculate"}),
                    RunEvent(run=run, seq=3, type="tool.output", data={"call_id": "c", "output": "error: x"}),
                ]
            )
        client = Client()
        client.force_login(self.operator)
        url = reverse("admin:runs_session_change", args=[quote(first.session_id)])
        client.get(url)
        with CaptureQueriesContext(connection) as queries:
            html = client.get(url).content.decode()
        self.assertEqual(html.count('<li class="rc-turn"'), runs)
        return len(queries)

    def test_the_session_page_count_does_not_grow_with_its_runs(self) -> None:
        self.assertEqual(self.session_count(2), self.session_count(30))
