"""The real harness (web + worker processes) exporting OpenTelemetry to a real Phoenix:
one trace from `POST /api/runs` to the run's result, the agent -> model/tool tree,
token counts, the run's ids on every span, and no secret anywhere."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from runs.tests.fake_openai import FakeOpenAI
from tests.integration.harness import Harness
from tests.integration.phoenix import PhoenixServer

pytestmark = [pytest.mark.integration, pytest.mark.needs_phoenix]

OPENAI_KEY = "sk-live-PHOENIX-SECRET-0123456789"


@pytest.fixture(scope="module")
def fake_openai():
    with FakeOpenAI(OPENAI_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def project() -> str:
    return f"harness-it-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def harness(tmp_path_factory, phoenix_server: PhoenixServer, fake_openai, project):
    h = Harness(
        tmp_path_factory.mktemp("harness"),
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=fake_openai.base_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=phoenix_server.otlp_endpoint,
        OTEL_SERVICE_NAME="harness-it",
        PHOENIX_PROJECT_NAME=project,
        PHOENIX_URL=phoenix_server.base_url,
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    h.start()
    yield h
    h.close()


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    return span.get("attributes") or {}


def metadata(span: dict[str, Any]) -> dict[str, Any]:
    """OpenInference's `metadata` (Phoenix hands it back flattened: metadata.run_id, ...)."""
    raw = attrs(span).get("metadata")
    if isinstance(raw, str):
        return json.loads(raw)
    flat = {key.removeprefix("metadata."): value for key, value in attrs(span).items() if key.startswith("metadata.")}
    return raw or flat


@pytest.mark.parametrize("model", ["offline", "gpt-5.4-mini"])
def test_a_run_is_one_trace_in_phoenix_from_request_to_result(harness, phoenix_server, project, model):
    key = harness.api_key("alice")
    client = harness.client(key)
    created = client.post("/api/runs", json={"input": "What is 6 * 7?", "agent": "calculator", "model": model})
    assert created.status_code == 202
    run_id = created.json()["id"]
    trace_id = created.json()["trace_id"]
    assert trace_id and len(trace_id) == 32
    done = harness.wait_for(client, run_id, ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert done["trace_id"] == trace_id

    def complete(spans: list[dict[str, Any]]) -> bool:
        mine = [span for span in spans if span["context"]["trace_id"] == trace_id]
        names = {span["name"] for span in mine}
        return "harness.run" in names and "calculate" in names and any(n.startswith("POST") for n in names)

    spans = [
        span
        for span in phoenix_server.spans(project, wait_for=complete, timeout=60)
        if span["context"]["trace_id"] == trace_id
    ]
    by_id = {span["context"]["span_id"]: span for span in spans}
    http = next(span for span in spans if span["name"].startswith("POST"))
    run_span = next(span for span in spans if span["name"] == "harness.run")
    assert http["name"] == "POST api/runs" and http["parent_id"] is None
    assert attrs(http)["http.status_code"] == 202 or attrs(http).get("http.response.status_code") == 202
    # The worker's span continues the request's trace across the queue.
    assert run_span["parent_id"] == http["context"]["span_id"]

    # The agent -> model / tool tree under the run.
    agent_spans = [span for span in spans if span["span_kind"] == "AGENT"]
    llm_spans = [span for span in spans if span["span_kind"] == "LLM"]
    tool_spans = [span for span in spans if span["span_kind"] == "TOOL"]
    assert agent_spans and len(llm_spans) == 2 and [span["name"] for span in tool_spans] == ["calculate"]
    for span in llm_spans + tool_spans:
        ancestors = []
        parent = by_id.get(span["parent_id"])
        while parent is not None:
            ancestors.append(parent["name"])
            parent = by_id.get(parent["parent_id"])
        assert "calculator" in ancestors and "harness.run" in ancestors and "POST api/runs" in ancestors
    for span in llm_spans:
        assert attrs(span)["llm.token_count.prompt"] > 0 and attrs(span)["llm.token_count.completion"] > 0
    if model != "offline":
        assert [attrs(span)["llm.token_count.prompt"] for span in llm_spans] == [11, 11]
        assert all(attrs(span)["llm.model_name"] for span in llm_spans)  # as the server reported it

    # The run, session, agent and principal on every span, as Phoenix filters them.
    for span in spans:
        assert metadata(span)["run_id"] == run_id, span["name"]
        assert attrs(span)["session.id"] == done["session_id"], span["name"]

    # No secret anywhere in what Phoenix holds.
    everything = json.dumps(phoenix_server.spans(project))
    assert OPENAI_KEY not in everything and key not in everything

    # The worker's log lines carry the trace and span ids beside the run id.
    run_logs = [json.loads(line) for line in harness.log_lines() if run_id in line and line.startswith("{")]
    started = next(entry for entry in run_logs if entry.get("msg") == "run started")
    assert started["trace_id"] == trace_id and len(started["span_id"]) == 16
