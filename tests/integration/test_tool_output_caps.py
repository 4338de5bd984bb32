"""Whatever a tool answers with, the model is given at most HARNESS_TOOL_OUTPUT_MAX_CHARS of it.

The real harness (daphne, the run engine) loads tests.integration.flood_agents: function tools
that answer with a dict and with two text parts, and an MCP tool over stdio (its own server
process per run), each asked for far more than the cap. The offline model answers with the
tool output it was given (`{output}`) and counts its input tokens from what it was sent, so
the run's output and usage show what reached the model; the run's events keep what the tool
answered, capped only at HARNESS_MAX_STORED_CHARS.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

TOOL_CAP = 1000
STORED_CAP = 50_000
MARKER = re.compile(r"\[truncated: (\d+) characters, kept the first (\d+)\]")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(
        tmp_path_factory.mktemp("tool-caps"),
        HARNESS_AGENT_MODULES="runs.registry,tests.integration.flood_agents",
        HARNESS_TOOL_OUTPUT_MAX_CHARS=str(TOOL_CAP),
        HARNESS_MAX_STORED_CHARS=str(STORED_CAP),
    ).start()
    yield h
    h.close()


@pytest.fixture(scope="module")
def client(harness):
    with harness.client(harness.api_key("team")) as client:
        yield client


def run_script(harness, client, agent: str, tool: str, chars: int) -> dict:
    script = {"steps": [{"tool": tool, "arguments": {"chars": chars}}], "answer": "{output}"}
    response = client.post(
        "/api/runs", json={"input": "flood", "agent": agent, "model": "offline", "offline_script": script}
    )
    assert response.status_code == 202, response.text
    return harness.wait_for(client, response.json()["id"], ("succeeded", "failed"), timeout=60)


def stored_tool_output(harness, run_id: str) -> dict:
    return harness.sql(
        "from runs.models import RunEvent\n"
        f"print(json.dumps(RunEvent.objects.get(run_id={run_id!r}, type='tool.output').data))"
    )


@pytest.mark.parametrize(
    ("agent", "tool", "chars", "total", "starts"),
    [
        ("flood", "flood_dict", 200_000, None, "{'data': 'ddd"),  # str() of the dict: a few characters more
        ("flood", "flood_parts", 100_000, 200_000, "aaa"),  # two text parts, counted together
        ("flood_mcp", "flood", 200_000, 200_000, "mmm"),  # an MCP tool's text content
    ],
)
def test_a_tool_gives_the_model_at_most_the_cap(harness, client, agent, tool, chars, total, starts):
    run = run_script(harness, client, agent, tool, chars)
    assert run["status"] == "succeeded", run["error"]
    seen = run["output"]  # what the offline model was given as the tool's output
    assert len(seen) <= TOOL_CAP
    marker = MARKER.search(seen)
    assert marker, seen[-200:]
    said_total, kept = int(marker.group(1)), int(marker.group(2))
    assert said_total >= (total or chars) and 0 < kept < TOOL_CAP
    # The model was sent the capped text, not the tool's 200,000 characters: the offline
    # model counts a token per 4 characters of JSON it is sent, over its two calls.
    assert run["usage"]["requests"] == 2
    assert run["usage"]["input_tokens"] < 2 * TOOL_CAP
    assert seen.startswith(starts)
    # The run's log keeps the tool's answer as the model reads it, up to the storage cap.
    stored = stored_tool_output(harness, run["id"])
    assert stored["truncated"] is True and len(stored["output"]) <= STORED_CAP
    assert stored["output"].startswith(starts)
    assert len(stored["output"]) > TOOL_CAP


def test_a_tool_under_the_cap_is_given_whole(harness, client):
    run = run_script(harness, client, "flood_mcp", "flood", TOOL_CAP - 10)
    assert run["status"] == "succeeded", run["error"]
    assert run["output"] == "m" * (TOOL_CAP - 10)
    stored = stored_tool_output(harness, run["id"])
    assert stored["truncated"] is False
