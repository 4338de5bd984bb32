"""Artifacts under attack from outside: media types, Unicode file names, an unreachable
object store, and retried requests (Idempotency-Key)."""

from __future__ import annotations

import hashlib
import json
import socket
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from accounts.models import IdempotencyKey
from artifacts.models import Artifact
from artifacts.services import ArtifactError, ArtifactStoreUnavailable, artifact_save
from artifacts.storage import MAX_NAME_BYTES, MAX_NAME_CHARS, InvalidName, sanitize_name
from artifacts.tests.conftest import ACCESS_KEY, BUCKET, SECRET_KEY, Store
from audit.models import AuditLog
from audit.services import Actor
from conftest import make_run
from execution.executor import run_execute
from harness_site.settings import artifact_storage_config
from runs.models import RunEvent

pytestmark = pytest.mark.django_db(transaction=True)

BODY = b"# Report\nall good\n"
SHA = hashlib.sha256(BODY).hexdigest()
TESTS = Actor.system("tests")


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[Store]:
    storages = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    with override_settings(STORAGES=storages, R2_BUCKET=""):
        yield Store("local")


def begin(api: Any, who: Any, run: Any, key: str | None = None, **overrides: Any) -> Any:
    body = {"name": "report.md", "content_type": "text/markdown", "size": len(BODY), "sha256": SHA, **overrides}
    headers = {**who.headers, **({"Idempotency-Key": key} if key is not None else {})}
    return api.client.post(
        f"/api/runs/{run.pk}/artifacts", data=json.dumps(body), content_type="application/json", headers=headers
    )


def confirm(api: Any, who: Any, artifact_id: str, key: str | None = None) -> Any:
    headers = {**who.headers, **({"Idempotency-Key": key} if key is not None else {})}
    return api.client.post(f"/api/artifacts/{artifact_id}/confirm", headers=headers)


def put(store: Store, url: str, content: bytes = BODY, content_type: str = "text/markdown") -> Any:
    headers = {"Content-Type": content_type, "Content-Length": str(len(content))}
    return store.request("PUT", url, content=content, headers=headers)


# --- content types -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain\r\nX-Injected: 1",
        "text/plain\n",
        "text/plain\r",
        "text",
        "text/",
        "/plain",
        "text/plain; charset",
        'text/plain; a="unterminated',
        "tëxt/plain",
        "a/b c",
        "text/plain\t",
        "",
    ],
)
def test_a_content_type_that_is_not_a_media_type_is_422(local_store, api, alice, content_type):
    run = make_run(alice)
    response = begin(api, alice, run, content_type=content_type)
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert "content_type" in json.dumps(detail), detail
    assert not Artifact.objects.exists()


def test_a_content_type_over_150_characters_is_422(local_store, api, alice):
    response = begin(api, alice, make_run(alice), content_type="text/" + "x" * 146)
    assert response.status_code == 422 and "content_type" in json.dumps(response.json()["detail"])
    with pytest.raises(ArtifactError, match="content_type: 151 characters"):
        artifact_save(run=make_run(alice), name="a.txt", content=b"x", content_type="text/" + "x" * 146, actor=TESTS)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain; charset=utf-8", "application/vnd.api+json", 'multipart/mixed; boundary="a b;c"'],
)
def test_media_types_with_parameters_are_accepted_and_uploadable(local_store, api, alice, content_type):
    response = begin(api, alice, make_run(alice), content_type=content_type)
    assert response.status_code == 201, response.content
    assert put(local_store, response.json()["upload_url"], content_type=content_type).status_code == 200
    assert confirm(api, alice, response.json()["artifact"]["id"]).status_code == 200


def test_an_agent_tool_cannot_store_a_bad_content_type(local_store, alice):
    with pytest.raises(ArtifactError, match="content_type: not a media type"):
        artifact_save(run=make_run(alice), name="a.txt", content=b"x", content_type="text/plain\r\nX: 1", actor=TESTS)
    assert not Artifact.objects.exists()


# --- Unicode file names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("ünïcødé-✓.txt", "ünïcødé-_.txt"),
        (unicodedata.normalize("NFD", "ünïcødé.txt"), "ünïcødé.txt"),  # NFC-normalized
        ("报告 2024.pdf", "报告_2024.pdf"),
        ("Отчёт.md", "Отчёт.md"),
        ("नमस्ते.txt", "नमस्ते.txt"),  # combining marks stay with their letters
        ("...hidden", "hidden"),
        ("a..b...c", "a.b.c"),
        ("\u202etxt.exe", "txt.exe"),  # a bidi override is not a letter
        ("ｆｕｌｌ／ｗｉｄｔｈ", "ｆｕｌｌ_ｗｉｄｔｈ"),  # a fullwidth solidus is no separator either
        ("a__b.txt", "a__b.txt"),
        ("✓✓.txt", "file.txt"),
        (".env", "env"),
        ("my  report (v2).md", "my_report_v2_.md"),
    ],
)
def test_names_keep_their_letters_and_stay_safe(name, kept):
    assert sanitize_name(name) == kept


@pytest.mark.parametrize("name", ["a/b", "a\\b", "..", "x\x00y", "x\ny", "x\ud800y", "~root", " "])
def test_names_that_are_paths_or_hold_control_characters_are_refused(name):
    with pytest.raises(InvalidName):
        sanitize_name(name)


def test_long_unicode_names_are_bounded_in_characters_and_bytes():
    for name in ["é" * 300 + ".md", "报" * 300 + ".txt", "x" * 500, "😀" * 100 + ".json"]:
        safe = sanitize_name(name)
        assert len(safe) <= MAX_NAME_CHARS and len(safe.encode()) <= MAX_NAME_BYTES, safe
        assert safe[0] != "." and ("." not in name or safe.endswith("." + name.rpartition(".")[2]))


def test_an_artifact_with_a_unicode_name_is_stored_and_downloadable(local_store, api, alice):
    artifact = artifact_save(
        run=make_run(alice), name="ünïcødé-✓.txt", content=b"hello", content_type="text/plain", actor=TESTS
    )
    assert artifact.name == "ünïcødé-_.txt"
    assert artifact.object_key.endswith("/ünïcødé-_.txt")
    url = api.get(f"/api/artifacts/{artifact.pk}", who=alice).json()["download_url"]
    assert local_store.request("GET", url).content == b"hello"


# --- an unreachable object store -----------------------------------------------------


@pytest.fixture
def closed_store() -> Iterator[str]:
    """The S3 store configured at a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    config = artifact_storage_config(
        bucket=BUCKET, endpoint=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="auto"
    )
    with override_settings(
        STORAGES={**settings.STORAGES, "artifacts": config},
        R2_BUCKET=BUCKET,
        S3_ENDPOINT_URL=endpoint,
        R2_ACCESS_KEY_ID=ACCESS_KEY,
        R2_SECRET_ACCESS_KEY=SECRET_KEY,
    ):
        yield endpoint


def test_the_scribe_names_the_unreachable_store_not_a_json_error(closed_store, alice):
    run = make_run(alice, agent="scribe", input="Release notes: v2 ships.")
    run_execute(run.pk)
    run.refresh_from_db()
    reason = f"object store unreachable at {closed_store} (bucket {BUCKET}): connection refused"
    everything = json.dumps([run.output, run.error, list(RunEvent.objects.filter(run=run).values_list("data"))])
    assert "JSONDecodeError" not in everything
    assert reason in (run.output or "") + (run.error or ""), (run.status, run.output, run.error)
    tool_outputs = [
        data["output"] for data in RunEvent.objects.filter(run=run, type="tool.output").values_list("data", flat=True)
    ]
    assert tool_outputs == [f"error: {reason}"]
    assert SECRET_KEY not in everything and ACCESS_KEY not in everything
    assert not Artifact.objects.exists()


def test_a_confirm_with_the_store_unreachable_is_a_503_naming_it(closed_store, api, alice):
    started = begin(api, alice, make_run(alice))
    assert started.status_code == 201, started.content
    response = confirm(api, alice, started.json()["artifact"]["id"])
    assert response.status_code == 503, response.content
    assert response.json()["detail"] == (
        f"object store unreachable at {closed_store} (bucket {BUCKET}): connection refused"
    )
    with pytest.raises(ArtifactStoreUnavailable, match="connection refused"):
        artifact_save(run=make_run(alice), name="a.txt", content=b"x", content_type="text/plain", actor=TESTS)


# --- Idempotency-Key ---------------------------------------------------------------------


def test_a_repeated_begin_with_a_key_gives_back_the_same_artifact_and_a_working_url(local_store, api, alice):
    run = make_run(alice)
    first = begin(api, alice, run, key="upload-1")
    again = begin(api, alice, run, key="upload-1")
    assert first.status_code == again.status_code == 201, again.content
    assert first.json()["artifact"]["id"] == again.json()["artifact"]["id"]
    assert "Idempotent-Replayed" not in first and again["Idempotent-Replayed"] == "true"
    assert Artifact.objects.count() == 1
    assert AuditLog.objects.filter(action="artifact.upload_started").count() == 1
    # The replay's URL works like the first one's.
    assert put(local_store, again.json()["upload_url"]).status_code == 200
    artifact_id = first.json()["artifact"]["id"]
    assert confirm(api, alice, artifact_id).status_code == 200
    # Once the upload is over, a replay of its begin is a conflict, not a new upload.
    over = begin(api, alice, run, key="upload-1")
    assert over.status_code == 409 and "its upload is over" in over.json()["detail"]
    # Without a key, every begin is a new artifact.
    assert begin(api, alice, run).json()["artifact"]["id"] != artifact_id


def test_the_same_key_with_another_begin_is_422_and_writes_nothing(local_store, api, alice):
    run, other = make_run(alice), make_run(alice)
    begin(api, alice, run, key="upload-2")
    for response in (begin(api, alice, run, key="upload-2", name="other.md"), begin(api, alice, other, key="upload-2")):
        assert response.status_code == 422, response.content
        assert "was used for a different request" in response.json()["detail"]
    assert Artifact.objects.count() == 1


def test_keys_of_begins_belong_to_their_principal(local_store, api, alice, outsider):
    mine = begin(api, alice, make_run(alice), key="shared").json()["artifact"]["id"]
    theirs = begin(api, outsider, make_run(outsider), key="shared")
    assert theirs.status_code == 201 and theirs.json()["artifact"]["id"] != mine


def test_a_repeated_confirm_with_a_key_gives_back_the_artifact_not_a_409(local_store, api, alice):
    started = begin(api, alice, make_run(alice)).json()
    assert put(local_store, started["upload_url"]).status_code == 200
    artifact_id = started["artifact"]["id"]
    first = confirm(api, alice, artifact_id, key="confirm-1")
    again = confirm(api, alice, artifact_id, key="confirm-1")
    assert first.status_code == again.status_code == 200, again.content
    assert first.json() == again.json() and again.json()["status"] == "ready"
    assert "Idempotent-Replayed" not in first and again["Idempotent-Replayed"] == "true"
    assert AuditLog.objects.filter(action="artifact.confirmed").count() == 1
    # Another key (or none) is another request: the artifact is no longer pending.
    assert confirm(api, alice, artifact_id, key="confirm-2").status_code == 409
    assert confirm(api, alice, artifact_id).status_code == 409
    # The key of a confirm is not the key of another artifact's confirm.
    other = begin(api, alice, make_run(alice)).json()["artifact"]["id"]
    assert confirm(api, alice, other, key="confirm-1").status_code == 422


def test_a_rejected_confirm_records_no_key_and_deletes_the_upload_for_good(local_store, api, alice):
    started = begin(api, alice, make_run(alice)).json()
    assert put(local_store, started["upload_url"], content=b"# Report\nALL GOOD\n").status_code == 200
    artifact_id = started["artifact"]["id"]
    rejected = confirm(api, alice, artifact_id, key="confirm-bad")
    assert rejected.status_code == 422 and "sha256" in rejected.json()["detail"]
    assert not Artifact.objects.filter(pk=artifact_id).exists()
    assert AuditLog.objects.filter(action="artifact.rejected", target_id=artifact_id).count() == 1
    assert not IdempotencyKey.objects.filter(key="confirm-bad").exists()
    assert confirm(api, alice, artifact_id, key="confirm-bad").status_code == 404
