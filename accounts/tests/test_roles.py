"""The console's roles (accounts/roles.py): what each group may do, through the admin as its users do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from accounts.roles import ADMIN, OPERATOR, OPERATOR_PERMISSIONS, ROLES, VIEWER, role_assign, roles_sync
from audit.models import AuditLog
from audit.services import Actor
from conftest import make_principal, make_run
from evals.models import Dataset, GoldenCase
from feedback.models import Feedback
from runs.models import Run
from runs.services import RunOutcome, run_claim, run_finish
from sandboxes.models import Sandbox

pytestmark = pytest.mark.django_db


@dataclass
class World:
    """What the actions act on: a queued run, a finished one, a live sandbox, a dataset."""

    queued: Run
    done: Run
    sandbox: Sandbox
    dataset: Dataset


@pytest.fixture
def world(db) -> World:
    owner = make_principal("roles-owner")
    queued = make_run(owner)
    done = make_run(owner)
    run_claim(run_id=done.pk, worker_id="w:roles")
    run_finish(run_id=done.pk, worker_id="w:roles", outcome=RunOutcome(status="failed", error="boom"))
    sandbox = Sandbox.objects.create(
        run=done, provider="local", status="live", deadline=timezone.now() + timedelta(minutes=5)
    )
    return World(queued, Run.objects.get(pk=done.pk), sandbox, Dataset.objects.create(name="roles-test"))


def member_of(role: str) -> Client:
    """A logged-in admin client of a new user given `role` the way an operator gives it."""
    user = User.objects.create_user(f"as-{role}", password="pw-123456789")
    role_assign(user=user, role=role, actor=Actor.system("tests"))
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


# Each action returns whether it happened (read from its effect, not from the page's wording).


def view_run_list(client: Client, world: World) -> bool:
    page = client.get(reverse("admin:runs_run_changelist"))
    return page.status_code == 200 and world.done.pk in page.content.decode()


def view_run_page(client: Client, world: World) -> bool:
    page = client.get(reverse("admin:runs_run_change", args=[quote(world.done.pk)]))
    return page.status_code == 200 and "boom" in page.content.decode()


def see_dashboard(client: Client, world: World) -> bool:
    page = client.get(reverse("admin:index")).content.decode()
    return 'id="fleet-dashboard"' in page and world.done.pk in page


def see_promote_on_dashboard(client: Client, world: World) -> bool:
    page = client.get(reverse("admin:index")).content.decode()
    return reverse("admin:evals_goldencase_promote", args=[quote(world.done.pk)]) in page


def cancel_run(client: Client, world: World) -> bool:
    client.post(reverse("admin:runs_run_changelist"), {"action": "cancel_runs", "_selected_action": [world.queued.pk]})
    return Run.objects.get(pk=world.queued.pk).status == Run.Status.CANCELLED


def promote_run(client: Client, world: World) -> bool:
    url = reverse("admin:evals_goldencase_promote", args=[quote(world.done.pk)])
    client.get(url)
    client.post(url, {"dataset": "roles-test", "name": "from a role", "output_match": "contains"})
    return GoldenCase.objects.filter(source_run=world.done).exists()


def run_eval(client: Client, world: World) -> bool:
    before = OrmQ.objects.count()
    client.post(
        reverse("admin:evals_dataset_changelist"), {"action": "run_eval", "_selected_action": [world.dataset.pk]}
    )
    return OrmQ.objects.count() == before + 1


def clean_up_sandbox(client: Client, world: World) -> bool:
    client.post(
        reverse("admin:sandboxes_sandbox_changelist"),
        {"action": "clean_up_sandboxes", "_selected_action": [world.sandbox.pk]},
    )
    return Sandbox.objects.get(pk=world.sandbox.pk).cleanup_state == Sandbox.Cleanup.DONE


def retry_run(client: Client, world: World) -> bool:
    client.post(reverse("admin:runs_run_retry", args=[quote(world.done.pk)]))
    return Run.objects.filter(retry_of=world.done).exists()


def annotate_run(client: Client, world: World) -> bool:
    url = reverse("admin:feedback_feedback_annotate", args=[world.done.pk])
    client.post(url, {"score": "-1", "label": "needs-review", "comment": "from a role"})
    return Feedback.objects.filter(run=world.done, source="operator").exists()


def change_budget(client: Client, world: World) -> bool:
    return client.get(reverse("admin:billing_budget_add")).status_code == 200


def manage_users(client: Client, world: World) -> bool:
    return client.get(reverse("admin:auth_user_changelist")).status_code == 200


@dataclass(frozen=True)
class Row:
    action: Callable[[Client, World], bool]
    allowed: frozenset[str]


EVERYONE = frozenset(ROLES)
OPERATORS = frozenset({OPERATOR, ADMIN})
ADMINS = frozenset({ADMIN})

# One line per action: who may do it. Approving is checked in approvals/tests (it needs a paused run).
MATRIX = [
    Row(view_run_list, EVERYONE),
    Row(view_run_page, EVERYONE),
    Row(see_dashboard, EVERYONE),
    Row(see_promote_on_dashboard, OPERATORS),
    Row(cancel_run, OPERATORS),
    Row(promote_run, OPERATORS),
    Row(run_eval, OPERATORS),
    Row(clean_up_sandbox, OPERATORS),
    Row(retry_run, OPERATORS),
    Row(annotate_run, OPERATORS),
    Row(change_budget, ADMINS),
    Row(manage_users, ADMINS),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("row", MATRIX, ids=lambda row: row.action.__name__)
def test_each_role_may_do_what_it_lists_and_nothing_else(row, role, world):
    assert row.action(member_of(role), world) is (role in row.allowed)


def test_every_group_holds_what_its_role_lists():
    viewer, operator, admin = (set(Group.objects.get(name=role).permissions.all()) for role in ROLES)
    assert viewer and all(p.codename.startswith("view_") for p in viewer)
    assert {p.content_type.app_label for p in viewer} >= {"runs", "audit", "sandboxes", "evals", "django_q"}
    assert not {p.content_type.app_label for p in viewer} & {"auth", "sessions", "admin"}
    existing = {f"{p.content_type.app_label}.{p.codename}" for p in operator - viewer}
    assert existing == {name for name in OPERATOR_PERMISSIONS if _exists(name)}
    assert admin == set(Permission.objects.all())


def _exists(name: str) -> bool:
    app_label, codename = name.split(".")
    return Permission.objects.filter(content_type__app_label=app_label, codename=codename).exists()


def test_the_sync_picks_up_permissions_that_appear_later_and_undoes_changes_by_hand():
    assert roles_sync() == {}  # the migrate already did it
    operator = Group.objects.get(name=OPERATOR)
    operator.permissions.remove(Permission.objects.get(codename="change_run"))
    operator.permissions.add(Permission.objects.get(codename="delete_apikey"))
    # A permission of a model added later (as approvals.decide_approval is, when its app gets the model).
    content_type, _ = ContentType.objects.get_or_create(app_label="approvals", model="approval")
    decide, _ = Permission.objects.get_or_create(
        content_type=content_type, codename="decide_approval", defaults={"name": "Can decide approvals"}
    )
    view, _ = Permission.objects.get_or_create(
        content_type=content_type, codename="view_approval", defaults={"name": "Can view approval"}
    )

    call_command("migrate", verbosity=0)  # the post_migrate handler syncs

    assert set(operator.permissions.filter(codename__in=["change_run", "decide_approval", "view_approval"])) == {
        Permission.objects.get(codename="change_run"),
        decide,
        view,
    }
    assert not operator.permissions.filter(codename="delete_apikey").exists()
    assert Group.objects.get(name=VIEWER).permissions.filter(pk=view.pk).exists()
    assert not Group.objects.get(name=VIEWER).permissions.filter(pk=decide.pk).exists()
    assert Group.objects.get(name=ADMIN).permissions.filter(pk=decide.pk).exists()


def test_a_deleted_group_comes_back_on_the_next_migrate():
    Group.objects.filter(name=VIEWER).delete()
    call_command("migrate", verbosity=0)
    assert Group.objects.get(name=VIEWER).permissions.filter(codename="view_run").exists()


def test_setrole_gives_one_role_at_a_time_with_an_audit_row(capsys):
    bob = User.objects.create_user("bob", password="pw-123456789")
    call_command("setrole", "bob", "operator")
    bob = User.objects.get(pk=bob.pk)
    assert bob.is_staff and [g.name for g in bob.groups.all()] == ["operator"]
    assert bob.has_perm("runs.change_run") and bob.has_perm("evals.promote_run")
    call_command("setrole", "bob", "viewer")
    bob = User.objects.get(pk=bob.pk)
    assert [g.name for g in bob.groups.all()] == ["viewer"] and not bob.has_perm("runs.change_run")
    assert "bob: viewer (was operator)." in capsys.readouterr().out
    call_command("setrole", "bob", "none")
    assert not User.objects.get(pk=bob.pk).groups.exists()
    rows = AuditLog.objects.filter(action="user.role_set", target_id=str(bob.pk)).order_by("id")
    assert [(r.data["role"], r.data["before"]) for r in rows] == [
        ("operator", []),
        ("viewer", ["operator"]),
        ("none", ["viewer"]),
    ]
    assert rows[0].actor_label == "manage.py setrole"
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("setrole", "nobody", "viewer")
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("setrole", "bob", "root")
