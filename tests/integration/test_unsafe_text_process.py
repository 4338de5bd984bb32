"""NUL characters and lone surrogates through the real harness (daphne + the run engine), on
the database the suite points at (SQLite, or Postgres with DATABASE_URL): what a client sends
is a 422 naming the field, never a 500; what a model or a tool produces is stored as U+FFFD
and the run succeeds."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runs.tests.fake_openai import FakeOpenAI
from runs.tests.test_unsafe_text import LONE, OPENAI_KEY, UnsafeOpenAI
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

FFFD = "\ufffd"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with UnsafeOpenAI(OPENAI_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def harness(tmp_path_factory, fake):
    root = Path(tempfile.mkdtemp(prefix="harness-sbx-it-"))
    h = Harness(
        tmp_path_factory.mktemp("unsafe-text"),
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=fake.base_url,
        HARNESS_SANDBOX_ROOT=str(root),
        HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS="5",
        HARNESS_SANDBOX_CPU_SECONDS="5",
        HARNESS_SANDBOX_MAX_PROCESSES="32",
        HARNESS_SANDBOX_MEMORY_MB="512",
        HARNESS_SANDBOX_CLOSE_GRACE_SECONDS="0",
    )
    h.start()
    yield h
    h.close()
    shutil.rmtree(root, ignore_errors=True)


def test_client_input_with_nul_or_a_lone_surrogate_is_a_422_never_a_500(harness):
    client = harness.client(harness.api_key("alice"))
    bodies = {
        "input": ['{"input": "hi \\u0000", "model": "offline"}', '{"input": "hi \\ud800", "model": "offline"}'],
        "session_id": [
            '{"input": "hi", "session_id": "sess_\\u0000"}',
            '{"input": "hi", "session_id": "sess_\\ud800"}',
        ],
    }
    for field, raws in bodies.items():
        for raw in raws:
            response = client.post("/api/runs", content=raw, headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (raw, response.text)
            assert any(field in error["loc"] for error in response.json()["errors"]), response.text
    for query, param in (("cursor=%00", "cursor"), ("agent=a%00b", "agent"), ("session_id=%00", "session_id")):
        response = client.get(f"/api/runs?{query}")
        assert response.status_code == 422, (query, response.text)
        assert response.json()["errors"][0]["loc"] == ["query", param]
    for path, param in (("/api/runs/run_%00", "run_id"), ("/api/artifacts/art_%00", "artifact_id")):
        response = client.get(path)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["errors"][0]["loc"] == ["path", param]
    assert client.get("/api/runs").json()["items"] == []


def test_a_run_whose_tool_and_model_print_nul_and_a_lone_surrogate_succeeds(harness):
    client = harness.client(harness.api_key("bob"))
    created = client.post("/api/runs", json={"input": "print a NUL", "agent": "coder", "model": "gpt-5.4-mini"})
    assert created.status_code == 202, created.text
    run = harness.wait_for(client, created.json()["id"], ("succeeded", "failed"), timeout=60)
    assert run["status"] == "succeeded", run
    assert f"a{FFFD}b" in run["output"] and f"{FFFD} end." in run["output"], run["output"]
    assert "\x00" not in run["output"] and LONE not in run["output"]
    with client.stream("GET", f"/api/runs/{run['id']}/events", timeout=30) as response:
        body = "".join(response.iter_text())
    events = [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]
    outputs = [event["data"]["output"] for event in events if event["type"] == "tool.output"]
    assert any(f"a{FFFD}b" in output for output in outputs), outputs
    assert events[-1]["type"] == "run.succeeded" and events[-1]["data"]["output"] == run["output"]
    assert "\\u0000" not in body and "\\ud800" not in body.lower()
    # The output file with a Unicode name became an artifact that keeps its letters.
    assert [item["name"] for item in client.get(f"/api/runs/{run['id']}/artifacts").json()] == ["ünïcødé-_.txt"]
    # And the session continues: its stored conversation (with the replaced characters) reads back.
    again = client.post(
        "/api/runs", json={"input": "again", "agent": "coder", "model": "gpt-5.4-mini", "session_id": run["session_id"]}
    )
    assert again.status_code == 202, again.text
    assert harness.wait_for(client, again.json()["id"], ("succeeded", "failed"), timeout=60)["status"] == "succeeded"
