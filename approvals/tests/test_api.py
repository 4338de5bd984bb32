"""`POST /api/runs/{id}/approvals` and the approvals a run shows: owner, operator, viewer, outsider."""

from __future__ import annotations

import pytest

from accounts.roles import role_assign
from approvals.models import Approval
from audit.models import AuditLog
from audit.services import Actor
from conftest import Principal, make_principal, make_run
from execution.executor import run_execute
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)

BIG = "Please refund $250 on order A-1001."


def paused_run(owner: Principal) -> Run:
    run = make_run(owner, agent="refunds", input=BIG)
    assert run_execute(run.pk) == "awaiting_approval"
    return run


def with_role(username: str, role: str) -> Principal:
    principal = make_principal(username)
    role_assign(user=principal.user, role=role, actor=Actor.system("tests"))
    return principal


def test_the_owner_sees_the_pending_call_and_approves_it(api, alice):
    run = paused_run(alice)
    body = api.get(f"/api/runs/{run.pk}", who=alice).json()
    assert body["status"] == "awaiting_approval"
    [pending] = body["pending_approvals"]
    assert pending["tool"] == "refund" and pending["status"] == "pending"
    assert pending["arguments"] == {"order_id": "A-1001", "amount": 250, "reason": BIG}
    assert pending["decided_by"] is None and pending["expires_at"]
    response = api.post(
        f"/api/runs/{run.pk}/approvals", {"call_id": pending["call_id"], "decision": "approve"}, who=alice
    )
    assert response.status_code == 200, response.content
    decided = response.json()
    assert decided["run_status"] == "queued"
    assert decided["approval"]["status"] == "approved"
    assert decided["approval"]["decided_by"].startswith("alice (")
    body = api.get(f"/api/runs/{run.pk}", who=alice).json()
    assert body["status"] == "queued" and body["pending_approvals"] == []
    audit = AuditLog.objects.get(run_id=run.pk, action="approval.approved")
    assert audit.actor_type == "api_key"
    assert run_execute(run.pk) == "succeeded"
    listed = api.get(f"/api/runs/{run.pk}/approvals", who=alice).json()
    assert [item["status"] for item in listed] == ["approved"]


def test_a_rejection_through_the_api_reaches_the_model(api, alice):
    run = paused_run(alice)
    call_id = Approval.objects.get(run=run).call_id
    message = "Not without a manager's sign-off."
    response = api.post(
        f"/api/runs/{run.pk}/approvals", {"call_id": call_id, "decision": "reject", "message": message}, who=alice
    )
    assert response.status_code == 200 and response.json()["approval"]["message"] == message
    assert run_execute(run.pk) == "succeeded"
    assert Run.objects.get(pk=run.pk).output == f"The refund was not made: {message}"


def test_a_second_decision_is_a_409_that_says_who_decided(api, alice):
    run = paused_run(alice)
    call_id = Approval.objects.get(run=run).call_id
    first = api.post(f"/api/runs/{run.pk}/approvals", {"call_id": call_id, "decision": "approve"}, who=alice)
    assert first.status_code == 200
    second = api.post(f"/api/runs/{run.pk}/approvals", {"call_id": call_id, "decision": "reject"}, who=alice)
    assert second.status_code == 409
    assert "already decided: approved by alice" in second.json()["detail"]


def test_bad_input_is_refused_and_changes_nothing(api, alice):
    run = paused_run(alice)
    call_id = Approval.objects.get(run=run).call_id
    url = f"/api/runs/{run.pk}/approvals"
    assert api.post(url, {"call_id": call_id, "decision": "maybe"}, who=alice).status_code == 422
    assert api.post(url, {"decision": "approve"}, who=alice).status_code == 422
    assert (
        api.post(url, {"call_id": call_id, "decision": "reject", "message": "x" * 2001}, who=alice).status_code == 422
    )
    missing = api.post(url, {"call_id": "call_nope", "decision": "approve"}, who=alice)
    assert missing.status_code == 404 and "call_nope" in missing.json()["detail"]
    assert Approval.objects.get(run=run).status == "pending"


def test_an_outsider_and_a_viewer_get_nothing(api, alice, outsider):
    run = paused_run(alice)
    call_id = Approval.objects.get(run=run).call_id
    viewer = with_role("vera", "viewer")
    for who in (outsider, viewer):
        response = api.post(f"/api/runs/{run.pk}/approvals", {"call_id": call_id, "decision": "approve"}, who=who)
        assert response.status_code == 404
        assert api.get(f"/api/runs/{run.pk}/approvals", who=who).status_code == 404
    assert api.post(f"/api/runs/{run.pk}/approvals", {"call_id": call_id, "decision": "approve"}).status_code == 401
    assert Approval.objects.get(run=run).status == "pending"


def test_an_operator_decides_another_principals_run(api, alice):
    run = paused_run(alice)
    call_id = Approval.objects.get(run=run).call_id
    operator = with_role("otto", "operator")
    response = api.post(f"/api/runs/{run.pk}/approvals", {"call_id": call_id, "decision": "approve"}, who=operator)
    assert response.status_code == 200 and response.json()["approval"]["decided_by"].startswith("otto (")
    # ... but the run stays alice's: the operator's key does not list it.
    assert api.get(f"/api/runs/{run.pk}", who=operator).status_code == 404


def test_cancel_while_waiting(api, alice):
    run = paused_run(alice)
    response = api.post(f"/api/runs/{run.pk}/cancel", who=alice)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["pending_approvals"] == []
    assert Approval.objects.get(run=run).status == "cancelled"


def test_the_run_list_filters_waiting_runs_in_constant_queries(api, alice, django_assert_max_num_queries):
    # key lookup, its last_used_at, the page of runs, and one query for all their pending approvals
    runs = [paused_run(alice) for _ in range(3)]
    make_run(alice, input="What is 1 + 1?")
    with django_assert_max_num_queries(4):
        body = api.get("/api/runs", who=alice, status="awaiting_approval").json()
    assert sorted(item["id"] for item in body["items"]) == sorted(run.pk for run in runs)
    assert all(len(item["pending_approvals"]) == 1 for item in body["items"])
    with django_assert_max_num_queries(4):
        everything = api.get("/api/runs", who=alice).json()
    assert len(everything["items"]) == 4
