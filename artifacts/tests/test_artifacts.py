"""The same behaviour against both stores: the local disk, and a real S3 server (rclone)."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from artifacts.models import Artifact
from artifacts.services import (
    ArtifactError,
    artifact_save,
    artifact_upload_begin,
    artifact_upload_confirm,
    artifacts_expire,
)
from artifacts.storage import InvalidName, artifact_storage, presigned_url
from audit.models import AuditLog
from audit.services import Actor
from conftest import make_run
from execution.executor import run_execute

pytestmark = pytest.mark.django_db(transaction=True)

BODY = b"# Report\nall good\n"
SHA = hashlib.sha256(BODY).hexdigest()
TESTS = Actor.system("tests")


def begin(api, who, run, **overrides):
    body = {"name": "report.md", "content_type": "text/markdown", "size": len(BODY), "sha256": SHA, **overrides}
    return api.post(f"/api/runs/{run.pk}/artifacts", body, who=who)


def put(store, url, content=BODY, content_type="text/markdown", length=None):
    headers = {"Content-Type": content_type, "Content-Length": str(len(content) if length is None else length)}
    return store.request("PUT", url, content=content, headers=headers)


def test_upload_confirm_and_download_through_scoped_urls(store, api, alice):
    run = make_run(alice)
    started = begin(api, alice, run)
    assert started.status_code == 201, started.content
    grant = started.json()
    artifact = grant["artifact"]
    assert artifact["status"] == "pending"
    assert artifact["object_key"] == f"runs/{run.pk}/{artifact['id']}/report.md"
    assert put(store, grant["upload_url"]).status_code == 200
    confirmed = api.post(f"/api/artifacts/{artifact['id']}/confirm", who=alice)
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "ready"
    got = api.get(f"/api/artifacts/{artifact['id']}", who=alice).json()
    assert got["sha256"] == SHA and got["size"] == len(BODY)
    download = store.request("GET", got["download_url"])
    assert download.status_code == 200 and download.content == BODY
    listed = api.get(f"/api/runs/{run.pk}/artifacts", who=alice).json()
    assert [item["id"] for item in listed] == [artifact["id"]]
    actions = set(AuditLog.objects.filter(target_id=artifact["id"]).values_list("action", flat=True))
    assert actions == {"artifact.upload_started", "artifact.confirmed"}


def test_a_url_allows_one_key_one_method_until_it_expires(store, alice):
    run = make_run(alice)
    artifact = artifact_save(run=run, name="a.txt", content=b"secret a", content_type="text/plain", actor=TESTS)
    other = artifact_save(run=run, name="b.txt", content=b"secret b", content_type="text/plain", actor=TESTS)
    url = presigned_url(key=artifact.object_key, method="GET")
    assert store.request("GET", url).content == b"secret a"
    # Another key with the same URL: refused (on S3 the signature covers the path; locally the token names the key).
    if store.kind == "s3":
        assert store.request("GET", url.replace(artifact.object_key, other.object_key)).status_code == 403
        # Listing the bucket or the run's prefix with a presigned URL's credentials: refused.
        base, query = url.split("?", 1)
        for listing in (
            base.split(artifact.object_key)[0] + "?" + query,
            base.split(artifact.object_key)[0] + f"?list-type=2&prefix=runs/&{query}",
        ):
            response = store.request("GET", listing)
            assert response.status_code in (400, 403) and b"b.txt" not in response.content
        assert store.request("GET", url.replace(artifact.object_key, f"runs/{run.pk}/")).status_code == 403
        tampered = url.replace("X-Amz-Expires=900", "X-Amz-Expires=3600")
    else:
        assert store.request("GET", "/artifacts/blob/").status_code == 404
        token = url.rsplit("/", 1)[1]
        tampered = url.replace(token, token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"))
    assert store.request("GET", tampered).status_code == 403
    # Another method: refused.
    assert put(store, url, content=b"overwrite", content_type="text/plain").status_code == 403
    assert store.request("DELETE", url).status_code in (403, 405)
    assert artifact_storage().open(artifact.object_key).read() == b"secret a"
    # Expired: refused.
    short = presigned_url(key=artifact.object_key, method="GET", expires_in=1)
    time.sleep(2.1)
    assert store.request("GET", short).status_code in (400, 403)


@override_settings(ARTIFACTS_URL_MAX_EXPIRY_SECONDS=60)
def test_expiry_is_clamped_to_the_configured_maximum(store, alice):
    run = make_run(alice)
    artifact = artifact_save(run=run, name="a.txt", content=b"x", content_type="text/plain", actor=TESTS)
    url = presigned_url(key=artifact.object_key, method="GET", expires_in=10**6)
    if store.kind == "s3":
        assert "X-Amz-Expires=60" in url


def test_a_bound_put_refuses_another_type_or_length(store, api, alice):
    run = make_run(alice)
    grant = begin(api, alice, run).json()
    assert put(store, grant["upload_url"], content_type="text/html").status_code == 403
    assert put(store, grant["upload_url"], content=BODY + b"more").status_code in (400, 403)
    assert not artifact_storage().exists(Artifact.objects.get(pk=grant["artifact"]["id"]).upload_key)
    response = api.post(f"/api/artifacts/{grant['artifact']['id']}/confirm", who=alice)
    assert response.status_code == 422 and "no object has been uploaded" in response.json()["detail"]


def test_an_upload_url_still_alive_after_confirm_cannot_change_the_artifact(store, api, alice):
    run = make_run(alice)
    grant = begin(api, alice, run).json()
    assert put(store, grant["upload_url"]).status_code == 200
    assert api.post(f"/api/artifacts/{grant['artifact']['id']}/confirm", who=alice).status_code == 200
    forged = b"# Report\nall baad\n"
    put(store, grant["upload_url"], content=forged)  # lands (if at all) in uploads/, never in the artifact
    url = api.get(f"/api/artifacts/{grant['artifact']['id']}", who=alice).json()["download_url"]
    assert store.request("GET", url).content == BODY


def test_confirming_an_object_that_does_not_match_deletes_it(store, api, alice):
    run = make_run(alice)
    wrong = b"# Report\nall baad\n"  # same length, other bytes
    assert len(wrong) == len(BODY)
    grant = begin(api, alice, run).json()
    assert put(store, grant["upload_url"], content=wrong).status_code == 200
    response = api.post(f"/api/artifacts/{grant['artifact']['id']}/confirm", who=alice)
    assert response.status_code == 422 and "sha256" in response.json()["detail"]
    assert not artifact_storage().exists(grant["artifact"]["object_key"])
    assert not Artifact.objects.filter(pk=grant["artifact"]["id"]).exists()
    assert AuditLog.objects.filter(action="artifact.rejected", target_id=grant["artifact"]["id"]).exists()


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "/abs/path.txt", "a/b.txt", "..", "nul\x00.txt", "back\\slash", "", "   "]
)
def test_names_that_are_paths_are_refused(store, api, alice, name):
    run = make_run(alice)
    response = begin(api, alice, run, name=name)
    assert response.status_code == 422, response.content
    assert "name" in str(response.json()["detail"])
    assert Artifact.objects.count() == 0
    with pytest.raises(InvalidName):
        artifact_save(run=run, name=name, content=b"x", content_type="text/plain", actor=TESTS)
    assert Artifact.objects.count() == 0


@override_settings(ARTIFACTS_MAX_BYTES=10)
def test_oversized_uploads_are_refused(store, api, alice):
    run = make_run(alice)
    response = begin(api, alice, run)
    assert response.status_code == 413 and "size" in response.json()["detail"]
    assert Artifact.objects.count() == 0


def test_bad_hashes_and_sizes_are_422(store, api, alice):
    run = make_run(alice)
    assert begin(api, alice, run, sha256="xyz").status_code == 422
    assert begin(api, alice, run, size=-1).status_code == 422
    assert Artifact.objects.count() == 0


def test_retention_deletes_expired_objects_and_marks_them(store, alice):
    run = make_run(alice)
    old = artifact_save(run=run, name="old.txt", content=b"old", content_type="text/plain", actor=TESTS)
    kept = artifact_save(run=run, name="new.txt", content=b"new", content_type="text/plain", actor=TESTS)
    Artifact.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    abandoned = artifact_upload_begin(
        run=run, name="never.txt", content_type="text/plain", size=3, sha256="0" * 64, actor=TESTS
    )
    Artifact.objects.filter(pk=abandoned.artifact.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert artifacts_expire() == {"expired": 1, "abandoned": 1}
    old.refresh_from_db()
    assert old.status == "expired" and old.expired_at
    assert not artifact_storage().exists(old.object_key)
    assert artifact_storage().exists(kept.object_key)
    assert not Artifact.objects.filter(pk=abandoned.artifact.pk).exists()
    assert AuditLog.objects.filter(action="artifact.expired", target_id=old.pk).exists()


def test_outsiders_get_404(store, api, alice, outsider):
    run = make_run(alice)
    artifact = artifact_save(run=run, name="a.txt", content=b"a", content_type="text/plain", actor=TESTS)
    assert api.get(f"/api/runs/{run.pk}/artifacts", who=outsider).status_code == 404
    assert api.get(f"/api/artifacts/{artifact.pk}", who=outsider).status_code == 404
    assert api.post(f"/api/artifacts/{artifact.pk}/confirm", who=outsider).status_code == 404
    assert begin(api, outsider, run).status_code == 404


def test_an_agent_saves_an_artifact_with_its_tool(store, api, alice):
    run = make_run(alice, agent="scribe", input="Meeting notes: ship on Friday.")
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    artifact = Artifact.objects.get(run=run)
    assert run.output == f"Saved notes.md ({artifact.size} bytes) as artifact {artifact.pk}."
    assert artifact.status == "ready" and artifact.content_type == "text/markdown"
    got = api.get(f"/api/artifacts/{artifact.pk}", who=alice).json()
    assert store.request("GET", got["download_url"]).content == b"Meeting notes: ship on Friday."


def test_confirm_twice_is_a_409(store, api, alice):
    run = make_run(alice)
    grant = begin(api, alice, run).json()
    put(store, grant["upload_url"])
    api.post(f"/api/artifacts/{grant['artifact']['id']}/confirm", who=alice)
    assert api.post(f"/api/artifacts/{grant['artifact']['id']}/confirm", who=alice).status_code == 409


def test_health_reports_r2_only_when_the_bucket_answers(store):
    body = Client().get("/health").json()
    assert body["backends"]["r2"] is (store.kind == "s3")


def test_health_reports_r2_false_when_the_bucket_is_unreachable(store):
    if store.kind != "s3":
        return
    from django.conf import settings

    from harness_site.settings import artifact_storage_config

    config = artifact_storage_config(
        bucket="missing-bucket",
        endpoint=settings.STORAGES["artifacts"]["OPTIONS"]["endpoint_url"],
        access_key="x",
        secret_key="y",
        region="auto",
    )
    with override_settings(STORAGES={**settings.STORAGES, "artifacts": config}):
        assert Client().get("/health").json()["backends"]["r2"] is False


def test_a_confirm_on_a_pending_upload_without_object_changes_nothing(store, alice):
    run = make_run(alice)
    grant = artifact_upload_begin(
        run=run, name="x.txt", content_type="text/plain", size=1, sha256="0" * 64, actor=TESTS
    )
    with pytest.raises(ArtifactError):
        artifact_upload_confirm(artifact=grant.artifact, actor=TESTS)
    assert Artifact.objects.get(pk=grant.artifact.pk).status == "pending"
