from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from django.urls import reverse

from artifacts.models import Artifact
from artifacts.services import artifact_save
from artifacts.storage import artifact_storage
from audit.models import AuditLog
from audit.services import Actor
from conftest import make_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_admin_lists_downloads_and_deletes_artifacts(store, alice, operator):
    run = make_run(alice)
    artifact = artifact_save(
        run=run, name="out.csv", content=b"a,b\n1,2\n", content_type="text/csv", actor=Actor.system("tests")
    )
    client = Client()
    client.force_login(operator)
    page = client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert "out.csv" in page and ">download</a>" in page
    listing = client.get(reverse("admin:artifacts_artifact_changelist")).content.decode()
    href = listing.split('">download</a>')[0].rsplit('href="', 1)[1].replace("&amp;", "&")
    assert store.request("GET", href).content == b"a,b\n1,2\n"
    response = client.post(
        reverse("admin:artifacts_artifact_changelist"),
        {"action": "delete_artifacts", "_selected_action": [artifact.pk]},
        follow=True,
    )
    assert "Deleted 1 artifact(s)" in response.content.decode()
    assert not Artifact.objects.filter(pk=artifact.pk).exists()
    assert not artifact_storage().exists(artifact.object_key)
    audit = AuditLog.objects.get(action="artifact.deleted", target_id=artifact.pk)
    assert audit.actor_label == operator.username and audit.run_id == run.pk


def test_lifecycle_command_prints_the_rule_and_applies_it_only_to_a_bucket(store):
    out = io.StringIO()
    call_command("artifacts_lifecycle", stdout=out)
    rules = json.loads(out.getvalue())["Rules"]
    retention = next(rule for rule in rules if rule["ID"] == "harness-artifact-retention")
    assert retention["Expiration"] == {"Days": 31} and retention["Filter"] == {"Prefix": "runs/"}
    if store.kind == "local":
        with pytest.raises(CommandError, match="No object store is configured"):
            call_command("artifacts_lifecycle", "--apply", stdout=io.StringIO())
    else:
        # rclone's S3 server does not implement lifecycle rules: the command says so plainly.
        try:
            call_command("artifacts_lifecycle", "--apply", stdout=(applied := io.StringIO()))
        except CommandError as exc:
            assert "Setting the lifecycle rule on 'artifacts' failed" in str(exc)
        else:
            assert "Lifecycle rule set" in applied.getvalue()


@override_settings(ARTIFACTS_RETENTION_DAYS=0)
def test_retention_zero_keeps_artifacts_and_sets_no_expiry_rule(store, alice):
    run = make_run(alice)
    artifact = artifact_save(
        run=run, name="k.txt", content=b"k", content_type="text/plain", actor=Actor.system("tests")
    )
    assert artifact.expires_at is None
    out = io.StringIO()
    call_command("artifacts_lifecycle", stdout=out)
    assert [rule["ID"] for rule in json.loads(out.getvalue())["Rules"]] == [
        "harness-stale-uploads",
        "harness-abort-incomplete-uploads",
    ]


def test_migrate_registers_the_retention_schedule():
    from django_q.models import Schedule

    assert Schedule.objects.filter(name="artifacts.expire", func="artifacts.tasks.expire_artifacts").exists()
