"""Feedback: the owner's API, operators' annotations, the run-list filters and the review queue."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.template.loader import render_to_string
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.roles import OPERATOR, VIEWER, roles_sync
from audit.models import AuditLog
from audit.services import Actor
from conftest import make_run
from evals.models import GoldenCase
from execution.executor import run_execute
from feedback import services
from feedback.admin import FeedbackFilter, FeedbackLabelFilter, feedback_panel
from feedback.models import Feedback
from runs.models import Run
from runs.services import run_cancel

pytestmark = pytest.mark.django_db


def finished_run(owner, **fields):
    """A finished run, cheaply: created, then cancelled before any worker takes it."""
    run = make_run(owner, **fields)
    return run_cancel(run=run, actor=Actor.system("tests"))


def give(run, user, score=-1, label="", comment="", source=Feedback.Source.API):
    feedback, _ = services.feedback_give(
        run=run, author=user, source=source, score=score, label=label, comment=comment, actor=Actor.system("tests")
    )
    return feedback


def with_role(username, role):
    roles_sync()
    user = User.objects.create_user(username, password="pw-123456789", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def url(run):
    return f"/api/runs/{run.pk}/feedback"


# --- the API ----------------------------------------------------------------------------------


def test_the_owner_gives_feedback_then_changes_it(api, alice):
    run = finished_run(alice)
    first = api.post(url(run), {"score": -1, "label": "wrong-answer", "comment": "42 is not <b>it</b>"}, who=alice)
    assert first.status_code == 201, first.content
    body = first.json()
    assert (body["score"], body["label"], body["comment"], body["source"]) == (
        -1,
        "wrong-answer",
        "42 is not <b>it</b>",
        "api",
    )
    assert body["run_id"] == run.pk
    again = api.post(url(run), {"score": 1}, who=alice)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert (again.json()["score"], again.json()["label"], again.json()["comment"]) == (1, "", "")
    same = api.post(url(run), {"score": 1}, who=alice)
    assert same.status_code == 200
    assert Feedback.objects.filter(run=run).count() == 1
    listed = api.get(url(run), who=alice).json()["items"]
    assert [item["id"] for item in listed] == [body["id"]]
    actions = list(AuditLog.objects.filter(run_id=run.pk, target_type="feedback").values_list("action", "data"))
    assert [action for action, _ in actions] == ["feedback.changed", "feedback.given"]  # newest first; no-op unrecorded
    assert actions[0][1]["changed"] == ["comment", "label", "score"] and actions[0][1]["before_score"] == -1
    assert "<b>" not in str(actions[1][1])  # the audit keeps the comment's length, not its text
    assert AuditLog.objects.get(action="feedback.given").actor_label.startswith("alice (")


def test_another_principals_run_is_404_and_no_key_is_401(api, alice, outsider):
    run = finished_run(alice)
    assert api.post(url(run), {"score": 1}, who=outsider).status_code == 404
    assert api.get(url(run), who=outsider).status_code == 404
    assert api.post(url(run), {"score": 1}).status_code == 401
    assert api.get(url(run)).status_code == 401
    assert api.post("/api/runs/run_nope/feedback", {"score": 1}, who=alice).status_code == 404
    assert not Feedback.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"score": 2}, "score"),
        ({"score": -2}, "score"),
        ({"score": "1"}, "score"),
        ({"score": True}, "score"),
        ({"score": 0.5}, "score"),
        ({}, "score"),
        ({"score": 1, "label": "Bad Label"}, "label"),
        ({"score": 1, "label": "-leading"}, "label"),
        ({"score": 1, "label": "x" * 51}, "label"),
        ({"score": 1, "comment": "nul \u0000 here"}, "comment"),
        ({"score": 1, "comment": "x" * 2001}, "comment"),
    ],
)
def test_bad_input_is_422_naming_the_field(api, alice, body, field):
    run = finished_run(alice)
    response = api.post(url(run), body, who=alice)
    assert response.status_code == 422, response.content
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert not Feedback.objects.exists()


@override_settings(HARNESS_FEEDBACK_MAX_COMMENT_CHARS=10)
def test_the_comment_limit_is_configurable(api, alice):
    run = finished_run(alice)
    response = api.post(url(run), {"score": 0, "comment": "eleven char"}, who=alice)
    assert response.status_code == 422 and "HARNESS_FEEDBACK_MAX_COMMENT_CHARS" in response.json()["detail"]
    assert api.post(url(run), {"score": 0, "comment": "ten chars!"}, who=alice).status_code == 201


def test_a_run_that_has_not_finished_takes_no_feedback(api, alice):
    run = make_run(alice)
    response = api.post(url(run), {"score": 1}, who=alice)
    assert response.status_code == 409 and "feedback is for finished runs" in response.json()["detail"]
    assert not Feedback.objects.exists()


# --- the services -----------------------------------------------------------------------------


def test_a_change_brings_a_reviewed_run_back_to_the_queue(alice, operator):
    run = finished_run(alice)
    feedback = give(run, alice.user, score=-1)
    assert Feedback.objects.needs_review().count() == 1
    marked = services.feedback_mark_reviewed(
        run_ids=[run.pk, run.pk], user=operator, actor=Actor.for_user(operator), reason="test"
    )
    assert marked == 1 and not Feedback.objects.needs_review().exists()
    assert AuditLog.objects.get(action="feedback.reviewed").data == {"feedback": 1, "reason": "test"}
    assert services.feedback_mark_reviewed(run_ids=[run.pk], user=operator, actor=Actor.system("t"), reason="x") == 0
    give(run, alice.user, score=-1)  # the same: nothing changes, still reviewed
    assert not Feedback.objects.needs_review().exists()
    give(run, alice.user, score=-1, comment="still wrong")
    feedback.refresh_from_db()
    assert feedback.reviewed_at is None and Feedback.objects.needs_review().count() == 1
    # A neutral or positive feedback needs review only when labelled so.
    other = finished_run(alice)
    give(other, alice.user, score=1, label="needs-review")
    assert set(Feedback.objects.needs_review().values_list("run_id", flat=True)) == {run.pk, other.pk}


def test_the_service_refuses_what_the_api_refuses(alice):
    run = finished_run(alice)
    with pytest.raises(services.FeedbackError, match="^score:"):
        give(run, alice.user, score=5)
    with pytest.raises(services.FeedbackError, match="^source:"):
        give(run, alice.user, source="email")
    with pytest.raises(services.FeedbackError, match="^comment:.*NUL"):
        give(run, alice.user, comment="\x00")
    assert not Feedback.objects.exists() and not AuditLog.objects.filter(target_type="feedback").exists()


# --- the admin: annotating --------------------------------------------------------------------


def test_an_operator_annotates_on_the_run_page_and_a_viewer_cannot(client, alice):
    run = finished_run(alice)
    annotate = reverse("admin:feedback_feedback_annotate", args=[quote(run.pk)])
    viewer = with_role("ann-viewer", VIEWER)
    client.force_login(viewer)
    assert client.post(annotate, {"score": "-1", "label": "x"}).status_code == 403
    assert not Feedback.objects.exists()

    operator = with_role("ann-operator", OPERATOR)
    client.force_login(operator)
    assert client.get(annotate).status_code == 405
    bad = client.post(annotate, {"score": "-1", "label": "Not A Slug"}, follow=True)
    assert "Feedback not saved: label:" in bad.content.decode() and not Feedback.objects.exists()
    done = client.post(annotate, {"score": "-1", "label": "needs-review", "comment": "tool misused"})
    assert done.status_code == 302 and done["Location"].endswith(
        reverse("admin:runs_run_change", args=[quote(run.pk)]) + "#feedback"
    )
    (feedback,) = Feedback.objects.all()
    assert (feedback.author, feedback.source, feedback.score, feedback.label) == (
        operator,
        "operator",
        -1,
        "needs-review",
    )
    changed = client.post(annotate, {"score": "0", "label": "needs-review"})
    assert changed.status_code == 302 and Feedback.objects.get().score == 0 and Feedback.objects.count() == 1
    assert AuditLog.objects.filter(action="feedback.changed", actor_label="ann-operator").exists()


def test_adding_needs_add_and_changing_needs_change(client, alice):
    run = finished_run(alice)
    annotate = reverse("admin:feedback_feedback_annotate", args=[quote(run.pk)])
    staff = User.objects.create_user("adder", password="pw-123456789", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["view_run", "view_feedback", "add_feedback"]))
    client.force_login(staff)
    assert client.post(annotate, {"score": "1"}).status_code == 302
    assert client.post(annotate, {"score": "-1"}).status_code == 403  # their own, but changing it needs change
    assert Feedback.objects.get().score == 1


def test_the_feedback_admin_adds_through_the_service_and_keeps_api_feedback_as_given(client, alice, operator):
    run = finished_run(alice)
    api_feedback = give(run, alice.user, score=-1, comment="bad")
    client.force_login(operator)
    add = reverse("admin:feedback_feedback_add")
    assert client.get(add).status_code == 200
    response = client.post(add, {"run": run.pk, "score": "1", "label": "looks-fine", "comment": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    mine = Feedback.objects.get(author=operator)
    assert (mine.source, mine.score, mine.label) == ("operator", 1, "looks-fine")
    assert AuditLog.objects.filter(action="feedback.given", target_id=str(mine.pk), actor_label="operator").exists()
    duplicate = client.post(add, {"run": run.pk, "score": "0"})
    assert duplicate.status_code == 200 and "already annotated this run" in duplicate.content.decode()
    unfinished = client.post(add, {"run": make_run(alice).pk, "score": "0"})
    assert "feedback is for finished runs" in unfinished.content.decode()
    bad = client.post(add, {"run": run.pk, "score": "7"})
    assert bad.status_code == 200 and Feedback.objects.count() == 2

    change_mine = reverse("admin:feedback_feedback_change", args=[mine.pk])
    assert (
        client.post(change_mine, {"score": "-1", "label": "looks-fine", "comment": "on reflection"}).status_code == 302
    )
    mine.refresh_from_db()
    assert (mine.score, mine.comment) == (-1, "on reflection")
    assert AuditLog.objects.filter(action="feedback.changed", target_id=str(mine.pk)).exists()
    change_api = reverse("admin:feedback_feedback_change", args=[api_feedback.pk])
    page = client.get(change_api).content.decode()
    assert 'name="_save"' not in page  # read-only
    assert client.post(change_api, {"score": "1", "label": "", "comment": ""}).status_code == 403
    api_feedback.refresh_from_db()
    assert api_feedback.score == -1
    assert client.post(reverse("admin:feedback_feedback_delete", args=[mine.pk])).status_code == 403


def test_the_run_page_panel_shows_feedback_and_the_form_to_those_who_may_annotate(rf: RequestFactory, alice):
    run = finished_run(alice)
    give(run, alice.user, score=-1, label="wrong-answer", comment="<script>x</script>")
    operator = with_role("panel-operator", OPERATOR)
    viewer = with_role("panel-viewer", VIEWER)
    request = rf.get("/")
    request.user = operator
    with CaptureQueriesContext(connection) as queries:
        context = feedback_panel(request, run)
    html = render_to_string("admin/feedback/run_panel.html", context, request=request)
    assert len(queries.captured_queries) <= 3
    assert 'id="feedback"' in html and "wrong-answer" in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert 'id="feedback-form"' in html and "Save annotation" in html and 'id="feedback-needs-review"' in html
    request.user = viewer
    html = render_to_string("admin/feedback/run_panel.html", feedback_panel(request, run), request=request)
    assert "wrong-answer" in html and 'id="feedback-form"' not in html
    request.user = operator
    running = make_run(alice)
    html = render_to_string("admin/feedback/run_panel.html", feedback_panel(request, running), request=request)
    assert "No feedback yet" in html and "opens when the run finishes" in html and 'id="feedback-form"' not in html


# --- the run list's filters -------------------------------------------------------------------


def _filtered(filter_class, rf, **params):
    request = rf.get("/", params)
    request.user = User(is_superuser=True)
    instance = filter_class(request, {key: [value] for key, value in params.items()}, Run, None)
    return set(instance.queryset(request, Run.objects.all()).values_list("id", flat=True))


def test_runs_filter_by_feedback_and_label(rf, alice, operator):
    bad, good, quiet, flagged = (finished_run(alice) for _ in range(4))
    give(bad, alice.user, score=-1, label="wrong-answer")
    give(good, alice.user, score=1)
    give(flagged, operator, score=0, label="needs-review", source=Feedback.Source.OPERATOR)
    everything = {bad.pk, good.pk, quiet.pk, flagged.pk}
    assert _filtered(FeedbackFilter, rf) == everything
    assert _filtered(FeedbackFilter, rf, feedback="any") == {bad.pk, good.pk, flagged.pk}
    assert _filtered(FeedbackFilter, rf, feedback="none") == {quiet.pk}
    assert _filtered(FeedbackFilter, rf, feedback="negative") == {bad.pk}
    assert _filtered(FeedbackFilter, rf, feedback="positive") == {good.pk}
    assert _filtered(FeedbackFilter, rf, feedback="review") == {bad.pk, flagged.pk}
    assert _filtered(FeedbackLabelFilter, rf, feedback_label="wrong-answer") == {bad.pk}
    request = rf.get("/")
    labels = FeedbackLabelFilter(request, {}, Run, None).lookups(request, None)
    assert sorted(labels) == [("needs-review", "needs-review"), ("wrong-answer", "wrong-answer")]


# --- the review queue -------------------------------------------------------------------------


def test_the_review_queue_lists_runs_to_review_in_a_fixed_number_of_queries(client, alice):
    operator = with_role("queue-operator", OPERATOR)
    runs = [finished_run(alice, input=f"question <{n}>") for n in range(2)]
    for run in runs:
        give(run, alice.user, score=-1, comment="wrong")
    happy = finished_run(alice)
    give(happy, alice.user, score=1)
    client.force_login(operator)
    queue = reverse("admin:feedback_feedback_review")
    client.get(queue)
    with CaptureQueriesContext(connection) as few:
        page = client.get(queue).content.decode()
    assert all(run.pk in page for run in runs) and happy.pk not in page
    assert "question &lt;1&gt;" in page
    assert reverse("admin:evals_goldencase_promote", args=[quote(runs[0].pk)]) in page and "mark-reviewed" in page
    for _ in range(6):
        run = finished_run(alice)
        give(run, alice.user, score=-1)
        give(run, operator, score=-1, label="needs-review", source=Feedback.Source.OPERATOR)
    with CaptureQueriesContext(connection) as many:
        client.get(queue)
    assert len(many.captured_queries) == len(few.captured_queries) <= 10

    marked = client.post(queue, {"run": runs[0].pk}, follow=True)
    assert "Marked 1 run(s) reviewed." in marked.content.decode()
    assert f'data-run="{runs[0].pk}"' not in client.get(queue).content.decode()
    both = client.post(queue, {"selected": [runs[1].pk, happy.pk]}, follow=True)
    assert "Marked 2 run(s) reviewed." in both.content.decode()  # happy's positive feedback is reviewed too


@pytest.mark.django_db(transaction=True)  # the run executes on the engine's own database threads
def test_promoting_from_the_queue_reviews_the_run(client, alice):
    operator = with_role("promoter", OPERATOR)
    run = make_run(alice, agent="calculator", input="What is 2 + 2?")
    run_execute(run.pk)
    run.refresh_from_db()
    give(run, alice.user, score=-1, label="wrong-answer")
    client.force_login(operator)
    promote = reverse("admin:evals_goldencase_promote", args=[quote(run.pk)])
    done = client.post(promote, {"dataset": "from-feedback", "name": "two and two", "output_match": "contains"})
    assert done.status_code == 302
    case = GoldenCase.objects.get(source_run=run)
    assert case.dataset.name == "from-feedback"
    feedback = Feedback.objects.get(run=run)
    assert feedback.reviewed_by == operator and not feedback.needs_review
    assert AuditLog.objects.get(action="feedback.reviewed", run_id=run.pk).data["reason"] == f"promoted to {case.pk}"
    assert f'data-run="{run.pk}"' not in client.get(reverse("admin:feedback_feedback_review")).content.decode()


def test_a_viewer_sees_the_queue_but_cannot_mark_or_promote(client, alice):
    run = finished_run(alice)
    give(run, alice.user, score=-1)
    viewer = with_role("queue-viewer", VIEWER)
    client.force_login(viewer)
    queue = reverse("admin:feedback_feedback_review")
    page = client.get(queue).content.decode()
    assert run.pk in page and "mark-reviewed" not in page and "promote-golden" not in page
    assert client.post(queue, {"run": run.pk}).status_code == 403
    assert Feedback.objects.needs_review().count() == 1
    outsider = User.objects.create_user("nostaff", password="pw-123456789")
    client.force_login(outsider)
    assert client.get(queue).status_code == 302  # to the admin login
    listing = User.objects.create_user("noperm", password="pw-123456789", is_staff=True)
    client.force_login(listing)
    assert client.get(queue).status_code == 403


def test_the_feedback_list_links_the_queue_and_marks_reviewed(client, alice, operator):
    run = finished_run(alice)
    give(run, alice.user, score=-1)
    client.force_login(operator)
    changelist = reverse("admin:feedback_feedback_changelist")
    page = client.get(changelist).content.decode()
    assert "Needs review (1)" in page and reverse("admin:feedback_feedback_review") in page
    done = client.post(
        changelist, {"action": "mark_reviewed", "_selected_action": [Feedback.objects.get().pk]}, follow=True
    )
    assert "Marked 1 run(s) reviewed." in done.content.decode()
    assert "Needs review (0)" in client.get(changelist).content.decode()
    assert client.get(changelist + "?review=done").status_code == 200


def test_the_review_queue_shows_harness_review_queue_page_size_runs_a_page(client, alice, settings):
    settings.HARNESS_REVIEW_QUEUE_PAGE_SIZE = 2
    runs = [finished_run(alice) for _ in range(3)]
    for run in runs:
        give(run, alice.user, score=-1)
    client.force_login(with_role("pager", OPERATOR))
    queue = reverse("admin:feedback_feedback_review")
    first, second = client.get(queue).content.decode(), client.get(queue, {"p": 2}).content.decode()
    shown = [[run.pk for run in runs if f'data-run="{run.pk}"' in page] for page in (first, second)]
    # Newest first: two on the first page (the limit), the third on the next.
    assert shown == [[runs[1].pk, runs[2].pk], [runs[0].pk]]
