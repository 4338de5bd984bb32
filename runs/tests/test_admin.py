from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey
from audit.models import AuditLog
from conftest import make_run
from execution.executor import run_execute
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_client(operator):
    client = Client()
    client.force_login(operator)
    return client


def test_every_admin_page_opens(staff_client, alice):
    run = make_run(alice)
    run_execute(run.pk)
    objects = {model: model._default_manager.first() for model in admin.site._registry}
    for model, obj in objects.items():
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert staff_client.get(changelist).status_code == 200, changelist
        if obj is not None:
            # quote(): the admin escapes "_24" and the like in primary keys (trace_24f... is a real id).
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)])
            assert staff_client.get(change).status_code == 200, change
    page = staff_client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert "tool.called" in page and "calculate" in page  # events and spans inline


def test_runs_changelist_filters_and_has_a_fixed_query_count(staff_client, alice, django_assert_max_num_queries):
    for _ in range(5):
        make_run(alice)
    url = reverse("admin:runs_run_changelist")
    with django_assert_max_num_queries(12):
        response = staff_client.get(url)
    assert response.status_code == 200
    for query in (
        "status__exact=queued",
        "agent=calculator",
        "model=offline",
        "created_at__gte=2000-01-01+00:00:00%2B00:00",
    ):
        assert staff_client.get(f"{url}?{query}").status_code == 200


def test_the_audit_log_is_read_only(staff_client, alice):
    make_run(alice)
    entry = AuditLog.objects.first()
    assert staff_client.get(reverse("admin:audit_auditlog_add")).status_code == 403
    change = reverse("admin:audit_auditlog_change", args=[entry.pk])
    assert staff_client.post(change, {"action": "tampered"}).status_code == 403
    assert (
        staff_client.post(reverse("admin:audit_auditlog_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    )
    entry.refresh_from_db()
    assert entry.action == "run.created"
    with pytest.raises(TypeError):
        AuditLog.objects.all().delete()
    with pytest.raises(TypeError):
        AuditLog.objects.update(action="x")


def test_creating_a_key_in_admin_shows_it_once(staff_client, alice, operator):
    response = staff_client.post(reverse("admin:accounts_apikey_add"), {"user": alice.user.pk, "name": "ci"})
    assert response.status_code == 200
    html = response.content.decode()
    key = html.split('id="raw-api-key"')[1].split(">", 1)[1].split("<", 1)[0]
    assert key.startswith("hk_") and "no-store" in response["Cache-Control"]
    created = ApiKey.objects.get(name="ci")
    assert key not in created.key_hash
    assert AuditLog.objects.filter(action="api_key.created", target_id=created.pk, actor_id=str(operator.pk)).exists()
    listing = staff_client.get(reverse("admin:accounts_apikey_change", args=[created.pk])).content.decode()
    assert key not in listing
    assert Client().get("/api/runs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_revoking_keys_in_admin(staff_client, alice):
    key = ApiKey.objects.get(user=alice.user)
    url = reverse("admin:accounts_apikey_changelist")
    staff_client.post(url, {"action": "revoke_keys", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditLog.objects.filter(action="api_key.revoked", target_id=key.pk).count() == 1
    assert Client().get("/api/runs", headers=alice.headers).status_code == 401
    assert staff_client.post(reverse("admin:accounts_apikey_delete", args=[key.pk]), {"post": "yes"}).status_code == 403


def test_cancel_runs_from_admin(staff_client, alice, operator):
    queued, done = make_run(alice), make_run(alice)
    run_execute(done.pk)
    url = reverse("admin:runs_run_changelist")
    response = staff_client.post(url, {"action": "cancel_runs", "_selected_action": [queued.pk, done.pk]}, follow=True)
    assert "Cancelled 1 run(s)." in response.content.decode()
    assert Run.objects.get(pk=queued.pk).status == "cancelled"
    assert Run.objects.get(pk=done.pk).status == "succeeded"
    audit = AuditLog.objects.get(action="run.cancelled", target_id=queued.pk)
    assert audit.actor_type == "user" and audit.actor_label == operator.username


def test_a_viewer_can_look_but_not_act(viewer, alice):
    run = make_run(alice)
    client = Client()
    client.force_login(viewer)
    assert client.get(reverse("admin:runs_run_change", args=[run.pk])).status_code == 200
    url = reverse("admin:runs_run_changelist")
    client.post(url, {"action": "cancel_runs", "_selected_action": [run.pk]})
    assert Run.objects.get(pk=run.pk).status == "queued"
    assert client.get(reverse("admin:accounts_apikey_add")).status_code == 403


def test_outsiders_of_the_admin_are_sent_to_login(alice):
    run = make_run(alice)
    response = Client().get(reverse("admin:runs_run_change", args=[run.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_pages_open_for_ids_the_admin_must_escape(staff_client, alice):
    from runs.models import Trace

    run = make_run(alice)
    trace = Trace.objects.create(id="trace_24f19cac72d94363bb52e52bf2e73e40", run=run, workflow_name="w")
    assert staff_client.get(reverse("admin:runs_trace_change", args=[quote(trace.pk)])).status_code == 200
    session_page = staff_client.get(reverse("admin:runs_session_change", args=[quote(run.session_id)])).content.decode()
    assert reverse("admin:runs_run_change", args=[quote(run.pk)]) in session_page


def test_the_run_page_links_its_trace_to_phoenix(staff_client, alice, settings):
    run = make_run(alice)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    Run.objects.filter(pk=run.pk).update(otel_trace_id=trace_id)
    url = reverse("admin:runs_run_change", args=[run.pk])
    settings.PHOENIX_URL = ""
    assert f"<code>{trace_id}</code> (set PHOENIX_URL to link it)" in staff_client.get(url).content.decode()
    settings.PHOENIX_URL = "https://phoenix.example.com"
    page = staff_client.get(url).content.decode()
    assert f'href="https://phoenix.example.com/redirects/traces/{trace_id}"' in page
    assert staff_client.get(reverse("admin:billing_spendday_changelist") + "?days=30").status_code == 200
    assert staff_client.get(reverse("admin:runs_run_changelist") + "?budget=exceeded&o=-9").status_code == 200
