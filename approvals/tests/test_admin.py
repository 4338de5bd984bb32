"""The pending-approvals queue, the run page's panel and the live page's buttons, per role."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.template import Context, Template
from django.test import Client, RequestFactory
from django.urls import reverse

from accounts.roles import role_assign
from approvals.models import Approval
from audit.models import AuditLog
from audit.services import Actor
from conftest import Principal, make_run
from execution.executor import run_execute
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)

BIG = "Please refund $250 on order A-1001."
QUEUE = "/admin/approvals/approval/"


def paused_run(owner: Principal) -> Run:
    run = make_run(owner, agent="refunds", input=BIG)
    assert run_execute(run.pk) == "awaiting_approval"
    return run


def console_user(username: str, role: str) -> Client:
    from django.contrib.auth.models import User

    user = User.objects.create_user(username, password="pass-123-word")
    role_assign(user=user, role=role, actor=Actor.system("tests"))
    client = Client()
    client.force_login(user)
    return client


def decide_url(approval: Approval) -> str:
    return reverse("admin:approvals_approval_decide", args=[quote(approval.pk)])


def test_the_queue_lists_pending_calls_with_buttons_for_an_operator(alice):
    run = paused_run(alice)
    approval = Approval.objects.get(run=run)
    operator = console_user("otto", "operator")
    page = operator.get(QUEUE)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Pending approvals" in html and run.pk in html and "refund" in html
    assert f'formaction="{decide_url(approval)}"' in html and "Approve" in html and "Reject" in html


def test_an_operator_approves_from_the_queue_and_the_run_is_queued(alice):
    run = paused_run(alice)
    approval = Approval.objects.get(run=run)
    operator = console_user("otto", "operator")
    response = operator.post(decide_url(approval), {"decision": "approve", f"message_{approval.pk}": "ok"}, follow=True)
    assert response.redirect_chain[-1][0] == QUEUE
    assert "Approved refund" in response.content.decode() and "queued and will resume" in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.message == "ok" and approval.decided_by.username == "otto"
    assert Run.objects.get(pk=run.pk).status == "queued"
    audit = AuditLog.objects.get(run_id=run.pk, action="approval.approved")
    assert audit.actor_type == "user" and audit.actor_label == "otto"
    # Decided calls leave the queue; the filter still shows them.
    assert approval.call_id not in operator.get(QUEUE).content.decode()
    assert approval.call_id in operator.get(QUEUE + "?status=all").content.decode()


def test_a_second_decision_in_the_admin_says_it_was_already_decided(alice):
    run = paused_run(alice)
    approval = Approval.objects.get(run=run)
    first, second = console_user("otto", "operator"), console_user("olga", "operator")
    first.post(decide_url(approval), {"decision": "reject", "message": "no"})
    response = second.post(decide_url(approval), {"decision": "approve"}, follow=True)
    html = response.content.decode()
    assert "Not decided:" in html and "already decided: rejected by otto" in html
    approval.refresh_from_db()
    assert approval.status == "rejected" and approval.decided_by.username == "otto"


def test_a_viewer_sees_the_queue_but_cannot_decide(alice):
    run = paused_run(alice)
    approval = Approval.objects.get(run=run)
    viewer = console_user("vera", "viewer")
    page = viewer.get(QUEUE)
    assert page.status_code == 200 and run.pk in page.content.decode()
    assert "formaction" not in page.content.decode()
    assert viewer.post(decide_url(approval), {"decision": "approve"}).status_code == 403
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_decide_goes_back_only_to_this_site(alice):
    run = paused_run(alice)
    approval = Approval.objects.get(run=run)
    operator = console_user("otto", "operator")
    live = reverse("run-live", args=[run.pk])
    back = operator.post(decide_url(approval), {"decision": "approve", "next": live})
    assert back.status_code == 302 and back["Location"] == live
    other = paused_run(alice)
    away = operator.post(
        decide_url(Approval.objects.get(run=other)), {"decision": "approve", "next": "https://evil.example/"}
    )
    assert away["Location"] == QUEUE
    assert operator.get(decide_url(approval)).status_code == 405


def test_the_run_panel_shows_buttons_to_those_who_may_decide(alice):
    run = paused_run(alice)
    approval = Approval.objects.get(run=run)
    template = Template("{% load approvals_console %}{% approvals_panel run %}")
    from django.contrib.auth.models import User

    operator = User.objects.create_user("otto")
    role_assign(user=operator, role="operator", actor=Actor.system("t"))
    viewer = User.objects.create_user("vera")
    role_assign(user=viewer, role="viewer", actor=Actor.system("t"))
    for user, buttons in ((operator, True), (viewer, False)):
        request = RequestFactory().get(f"/admin/runs/run/{run.pk}/change/")
        request.user = User.objects.get(pk=user.pk)  # a fresh permission cache
        html = template.render(Context({"request": request, "run": run}))
        assert 'id="approvals"' in html and approval.call_id in html and "refund" in html
        assert (f'action="{decide_url(approval)}"' in html) is buttons
        assert ('name="next" value="/admin/runs/run/' in html) is buttons
    quiet = make_run(alice)
    request = RequestFactory().get("/")
    request.user = operator
    assert template.render(Context({"request": request, "run": quiet})).strip() == ""


def test_the_live_page_gives_deciders_the_buttons(alice):
    run = paused_run(alice)
    operator = console_user("otto", "operator")
    html = operator.get(reverse("run-live", args=[run.pk])).content.decode()
    assert 'id="decide-form"' in html and "APPROVAL_ID" in html and "csrfmiddlewaretoken" in html
    viewer = console_user("vera", "viewer")
    html = viewer.get(reverse("run-live", args=[run.pk])).content.decode()
    assert 'id="decide-form"' not in html and '"can_decide": false' in html


def test_the_queue_costs_the_same_queries_however_long(alice, django_assert_max_num_queries):
    operator = console_user("otto", "operator")
    paused_run(alice)
    operator.get(QUEUE)  # warm the session and content types
    for _ in range(4):
        paused_run(alice)
    with django_assert_max_num_queries(12):
        page = operator.get(QUEUE)
    assert page.content.decode().count('class="button approve-call"') == 5


def test_the_approval_page_opens(alice):
    run = paused_run(alice)
    approval = Approval.objects.get(run=run)
    viewer = console_user("vera", "viewer")
    page = viewer.get(reverse("admin:approvals_approval_change", args=[quote(approval.pk)]))
    assert page.status_code == 200 and "order_id" in page.content.decode()
