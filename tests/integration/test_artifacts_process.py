"""Artifacts through the real harness: an agent's tool writes one, clients upload and download
through scoped URLs; on the local disk (harness-signed URLs) and on a real S3 server (rclone)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from artifacts.tests.conftest import ACCESS_KEY, BUCKET, SECRET_KEY, s3_server  # noqa: F401  (fixture)
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["local", "s3"])
def harness(request, tmp_path_factory):
    env = {}
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        env = {
            "R2_BUCKET": BUCKET,
            "S3_ENDPOINT_URL": server.endpoint,
            "R2_ACCESS_KEY_ID": ACCESS_KEY,
            "R2_SECRET_ACCESS_KEY": SECRET_KEY,
        }
    # No SITE_URL: the harness's links follow the port it serves on (as `PORT=9000 make run`).
    h = Harness(tmp_path_factory.mktemp(f"artifacts-{request.param}"), **env)
    h.env.pop("SITE_URL", None)
    h.start()
    h.kind = request.param
    yield h
    h.close()


def test_health_reports_r2_only_with_a_live_bucket(harness):
    assert httpx.get(f"{harness.base_url}/health").json()["backends"]["r2"] is (harness.kind == "s3")


def test_an_agent_writes_an_artifact_a_client_downloads(harness):
    key = harness.api_key("alice")
    client = harness.client(key)
    run = client.post(
        "/api/runs", json={"input": "Release notes: v2 ships.", "agent": "scribe", "model": "offline"}
    ).json()
    done = harness.wait_for(client, run["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    (artifact,) = client.get(f"/api/runs/{run['id']}/artifacts").json()
    assert artifact["name"] == "notes.md" and artifact["status"] == "ready"
    detail = client.get(f"/api/artifacts/{artifact['id']}").json()
    if harness.kind == "local":
        assert detail["download_url"].startswith(f"http://localhost:{harness.port}/")
    download = httpx.get(detail["download_url"])
    assert download.status_code == 200 and download.content == b"Release notes: v2 ships."
    outsider = harness.client(harness.api_key("mallory"))
    assert outsider.get(f"/api/artifacts/{artifact['id']}").status_code == 404


def upload_grant(client: httpx.Client, run_id: str, name: str, content_type: str, body: bytes) -> dict[str, Any]:
    """An upload URL for `body` as the run's artifact `name` (POST /api/runs/{id}/artifacts)."""
    declared = {
        "name": name,
        "content_type": content_type,
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    return client.post(f"/api/runs/{run_id}/artifacts", json=declared).json()


def test_a_client_uploads_by_url_and_confirms(harness):
    key = harness.api_key("bob")
    client = harness.client(key)
    run = client.post("/api/runs", json={"input": "2+2", "agent": "calculator", "model": "offline"}).json()
    body = b'{"rows": 3}'
    grant = upload_grant(client, run["id"], "data.json", "application/json", body)
    assert httpx.put(grant["upload_url"], content=body, headers={"Content-Type": "text/plain"}).status_code == 403
    assert httpx.put(grant["upload_url"], content=body, headers={"Content-Type": "application/json"}).status_code == 200
    confirmed = client.post(f"/api/artifacts/{grant['artifact']['id']}/confirm")
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "ready"
    assert httpx.get(client.get(f"/api/artifacts/{grant['artifact']['id']}").json()["download_url"]).content == body
    logs = harness.log_path.read_text() + harness.err_path.read_text()
    assert SECRET_KEY not in logs
    assert grant["upload_url"].split("?")[-1] not in logs and grant["upload_url"].rsplit("/", 1)[-1] not in logs


def test_an_upload_may_be_larger_than_an_api_request(harness):
    """An upload URL takes bodies up to ARTIFACTS_MAX_BYTES, from the object store or from the
    harness's own blob route, while every API route stops at HARNESS_MAX_REQUEST_BYTES (1 MiB here)."""
    client = harness.client(harness.api_key("carol"))
    run = client.post("/api/runs", json={"input": "2+2", "agent": "calculator", "model": "offline"}).json()
    body = bytes(range(256)) * (8 * 1024)  # 2 MiB
    grant = upload_grant(client, run["id"], "big.bin", "application/octet-stream", body)
    put = httpx.put(grant["upload_url"], content=body, headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 200, put.text
    assert client.post(f"/api/artifacts/{grant['artifact']['id']}/confirm").json()["status"] == "ready"
    assert httpx.get(client.get(f"/api/artifacts/{grant['artifact']['id']}").json()["download_url"]).content == body
