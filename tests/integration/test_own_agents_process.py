"""A team's own agents (examples/support_desk, a package outside the harness's apps) loaded
through HARNESS_AGENT_MODULES into the real harness (daphne, the run engine, the jobs cluster):
one run per SDK feature (function tools sync and async, a handoff, structured output, input
and output guardrails, dynamic instructions, an MCP server over stdio, approvals on a handoff's
tool), offline scripts sent with a run, the web process proven not to import the SDK or the
package, a broken module stopping the harness at startup, and the eval gate replaying the
example's golden dataset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import ROOT, Harness

pytestmark = pytest.mark.integration

MODULES = "runs.registry,examples.support_desk.agents"
GOLDEN = ROOT / "examples" / "support_desk" / "golden.json"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(
        tmp_path_factory.mktemp("own-agents"), HARNESS_AGENT_MODULES=MODULES, HARNESS_WORKER_CONCURRENCY="8"
    ).start()
    yield h
    h.close()


@pytest.fixture(scope="module")
def client(harness):
    with harness.client(harness.api_key("team")) as client:
        yield client


def run(harness: Harness, client: httpx.Client, agent: str, text: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/runs", json={"input": text, "agent": agent, "model": "offline", **extra})
    assert response.status_code == 202, response.text
    return harness.wait_for(
        client, response.json()["id"], ("succeeded", "failed", "cancelled", "awaiting_approval"), timeout=60
    )


def events(harness: Harness, run_id: str) -> list[dict[str, Any]]:
    return harness.sql(
        "from runs.models import RunEvent\n"
        f"print(json.dumps([{{'type': e.type, 'data': e.data}} for e in RunEvent.objects.filter(run_id={run_id!r})"
        ".exclude(type='text.delta').order_by('seq')]))"
    )


def spans(harness: Harness, run_id: str) -> list[dict[str, Any]]:
    return harness.sql(
        "from runs.models import Span, Run\n"
        f"trace = Run.objects.get(pk={run_id!r}).trace_id\n"
        "print(json.dumps(list(Span.objects.filter(trace_id=trace).order_by('started_at')"
        ".values('kind', 'name', 'data')), default=str))"
    )


def test_the_workers_publish_the_team_agents(harness, client):
    body = client.get("/api/agents").json()
    agents = {agent["name"]: agent for agent in body["agents"]}
    assert {"assistant", "calculator", "support", "classifier", "shipping"} <= set(agents)
    support = agents["support"]
    assert support["models"] == ["offline", "gpt-4.1-mini"] and not support["sandbox"]
    # Its own tools, those of the agent it hands off to, and the handoff's.
    assert support["tools"] == ["check_stock", "lookup_order", "refund", "transfer_to_billing"]
    assert support["spec"]["handoffs"] == ["transfer_to_billing"]
    assert support["spec"]["guardrails"] == {"input": ["no_card_numbers"], "output": ["no_internal_codes"]}
    assert support["spec"]["approvals"] == {"refund": "conditional"}
    assert support["spec"]["dynamic_instructions"] is True
    assert support["spec"]["module"] == "examples.support_desk.agents"
    assert support["spec"]["maxima"] == {"max_turns": 8} and support["spec"]["timeout_seconds"] == 60
    assert agents["classifier"]["spec"]["output_type"] == "Ticket"
    assert agents["shipping"]["spec"]["mcp_servers"] == ["shipping"]
    # Every live worker runs the registry the web validates against.
    assert body["workers"] and body["consistent"] is True
    assert {worker["registry_version"] for worker in body["workers"]} == {body["registry_version"]}


def test_an_unknown_agent_or_model_is_a_422_naming_the_valid_ones(client):
    response = client.post("/api/runs", json={"input": "hi", "agent": "nope", "model": "offline"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("agent: unknown agent 'nope'; valid agents: ") and "support" in detail
    assert client.get("/api/runs", params={"agent": "nope"}).json()["items"] == []


def test_function_tools_and_a_handoff(harness, client):
    body = run(harness, client, "support", "Where is my order A-1001?")
    assert body["status"] == "succeeded", body
    assert body["output"].startswith("Order status: ") and "A-1001" in body["output"]
    kinds = events(harness, body["id"])
    handoffs = [event["data"] for event in kinds if event["type"] == "handoff"]
    assert [(handoff["stage"], handoff.get("from"), handoff.get("to")) for handoff in handoffs] == [
        ("handoff_requested", None, None),
        ("handoff_occured", "triage", "billing"),
    ], kinds
    assert handoffs[0]["tool"] == "transfer_to_billing"
    assert {"agent": "billing"} in [event["data"] for event in kinds if event["type"] == "agent.updated"]
    called = [event["data"]["name"] for event in kinds if event["type"] == "tool.called"]
    assert called == ["lookup_order"]  # the sync tool, on the billing agent (a handoff is its own event)
    recorded = spans(harness, body["id"])
    assert any(span["kind"] == "handoff" for span in recorded), recorded
    assert [span["name"] for span in recorded if span["kind"] == "function"] == ["lookup_order"]
    assert {span["name"] for span in recorded if span["kind"] == "agent"} == {"triage", "billing"}

    stock = run(harness, client, "support", "Is MUG-01 in stock?")  # the async tool
    assert stock["status"] == "succeeded" and stock["output"].startswith("Stock: "), stock
    assert "check_stock" in [event["data"].get("name") for event in events(harness, stock["id"])]


def test_structured_output_is_stored_and_returned_as_json(harness, client):
    body = run(harness, client, "classifier", "I was charged twice, please refund it urgently")
    assert body["status"] == "succeeded", body
    assert body["output_json"] == {
        "category": "billing",
        "urgent": True,
        "summary": "I was charged twice, please refund it urgently",
    }
    assert json.loads(body["output"]) == body["output_json"]
    final = events(harness, body["id"])[-1]
    assert final["type"] == "run.succeeded" and final["data"]["output_json"] == body["output_json"]


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [
        ("My card is 4111 1111 1111 1111, charge it", "input", "no_card_numbers"),
        ("leak the status of order A-1001", "output", "no_internal_codes"),
    ],
)
def test_a_tripped_guardrail_fails_the_run_saying_which(harness, client, text, kind, name):
    body = run(harness, client, "support", text)
    assert body["status"] == "failed", body
    assert body["error"] == f"guardrail_tripped: the {kind} guardrail {name!r} tripped"
    tripped = [event["data"] for event in events(harness, body["id"]) if event["type"] == "run.guardrail_tripped"]
    assert tripped and tripped[0]["kind"] == kind and tripped[0]["guardrail"] == name
    audit = harness.sql(
        "from audit.models import AuditLog\n"
        f"print(json.dumps(list(AuditLog.objects.filter(run_id={body['id']!r}, action='run.guardrail_tripped')"
        ".values_list('data', flat=True))))"
    )
    assert audit == [tripped[0]]
    if kind == "input":  # run before the model: the card number never reached it
        assert body["usage"]["requests"] == 0


def test_dynamic_instructions_read_the_run_context(harness, client):
    body = run(harness, client, "support", "who am i?")
    assert body["status"] == "succeeded", body
    assert f"Run {body['id']} (session {body['session_id']})." in body["output"]


def test_an_mcp_server_over_stdio_serves_its_tools_for_the_run(harness, client):
    body = run(harness, client, "shipping", "When will order A-1001 arrive?")
    assert body["status"] == "succeeded", body
    assert body["output"].startswith("ETA: ") and "A-1001" in body["output"]
    recorded = spans(harness, body["id"])
    listed = [span for span in recorded if span["kind"] == "mcp_tools"]
    assert listed and listed[0]["data"]["server"] == "shipping" and "shipping_eta" in listed[0]["data"]["result"]
    assert [span["name"] for span in recorded if span["kind"] == "function"] == ["shipping_eta"]
    # The run's server process ended with the run.
    deadline = time.monotonic() + 10
    while _mcp_servers_of(harness) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _mcp_servers_of(harness) == []


def _mcp_servers_of(harness: Harness) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            group = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
        except (OSError, ValueError, IndexError):
            continue
        if group == harness.group and b"support_desk/mcp_server.py" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_refund_on_the_handoff_target_waits_for_approval(harness, client):
    small = run(harness, client, "support", "Please refund $20 on order A-1001")
    assert small["status"] == "succeeded" and small["output"].startswith("Refund: "), small
    big = run(harness, client, "support", "Please refund $80 on order A-1001")
    assert big["status"] == "awaiting_approval", big
    (pending,) = big["pending_approvals"]
    assert pending["tool"] == "refund" and pending["arguments"]["amount"] == 80
    decided = client.post(
        f"/api/runs/{big['id']}/approvals", json={"call_id": pending["call_id"], "decision": "approve"}
    )
    assert decided.status_code == 200, decided.text
    done = harness.wait_for(client, big["id"], ("succeeded", "failed", "cancelled"), timeout=60)
    assert done["status"] == "succeeded" and done["output"].startswith("Refund: "), done


def test_an_offline_script_sent_with_the_run_drives_the_agent(harness, client):
    script = {"steps": [{"tool": "check_stock", "arguments": {"sku": "CAP-9"}}], "answer": "scripted: {output}"}
    body = run(harness, client, "support", "anything at all", offline_script=script)
    assert body["status"] == "succeeded" and body["output"].startswith("scripted: "), body
    assert "CAP-9" in body["output"]
    # A step the agent cannot take fails the run, saying why.
    wrong = run(harness, client, "support", "anything", offline_script={"steps": [{"tool": "launch"}], "answer": "x"})
    assert wrong["status"] == "failed"
    assert wrong["error"].startswith("offline script step 1 calls 'launch', which the agent does not offer")
    # A malformed script, or one for a real model, changes nothing.
    before = len(client.get("/api/runs", params={"limit": 200}).json()["items"])
    bad = client.post(
        "/api/runs", json={"input": "x", "agent": "support", "model": "offline", "offline_script": {"steps": 3}}
    )
    assert bad.status_code == 422 and bad.json()["detail"] == "offline_script: steps must be a list"
    assert len(client.get("/api/runs", params={"limit": 200}).json()["items"]) == before


def test_the_eval_gate_replays_the_team_golden_dataset(harness):
    loaded = harness.manage("loadgolden", str(GOLDEN))
    assert "case(s) created" in loaded.stdout, loaded.stderr
    cases = json.loads(GOLDEN.read_text())["cases"]
    gate = harness.manage("eval", "--dataset", "support-desk", check=False)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert f"{len(cases)}/{len(cases)} passed" in gate.stdout + gate.stderr


def test_the_web_process_imports_neither_the_sdk_nor_the_team_package(harness):
    """The ASGI app serves GET /api/agents and a POST /api/runs of a team agent without them."""
    code = """
import json, sys
import django
django.setup()
import harness_site.asgi, harness_site.urls, harness_site.api
from django.test import Client
from accounts.services import apikey_create
from audit.services import Actor
from django.contrib.auth.models import User
user, _ = User.objects.get_or_create(username="webcheck")
_, key = apikey_create(user=user, actor=Actor.system("tests"))
client = Client(headers={"Authorization": "Bearer " + key}, HTTP_HOST="localhost")
agents = client.get("/api/agents").json()["agents"]
made = client.post("/api/runs", {"input": "hi", "agent": "support", "model": "offline"}, content_type="application/json")
unknown = client.post("/api/runs", {"input": "hi", "agent": "nope"}, content_type="application/json")
leaked = sorted(n for n in sys.modules if n.split(".")[0] in ("agents", "examples", "mcp"))
print(json.dumps({"agents": [a["name"] for a in agents], "made": made.status_code, "unknown": unknown.status_code, "leaked": leaked[:5]}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**harness.env, "DJANGO_SETTINGS_MODULE": "harness_site.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "support" in result["agents"] and result["made"] == 202 and result["unknown"] == 422
    assert result["leaked"] == []


def test_a_broken_agent_module_stops_the_harness_at_startup(tmp_path):
    team = tmp_path / "team"
    (team / "brokendesk").mkdir(parents=True)
    (team / "brokendesk" / "__init__.py").write_text("")
    (team / "brokendesk" / "agents.py").write_text(
        "from harness import AgentEntry\nAGENTS = [AgentEntry(name='x', description='')]\n"
    )
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("HARNESS_", "DATABASE_", "DJANGO_"))},
        "HARNESS_IGNORE_ENV_FILE": "1",
        "DEBUG": "true",
        "HARNESS_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "HARNESS_AGENT_MODULES": "runs.registry,brokendesk.agents",
        "PYTHONPATH": str(team),
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "runharness", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "agents.E001" in out.stderr and "brokendesk.agents" in out.stderr, out.stderr[-2000:]
    assert "agent 'x': a description is required" in out.stderr


def test_a_team_sandbox_agent_runs_in_the_run_sandbox(harness, client):
    body = run(harness, client, "reporter", "Write a report on order A-1001")
    assert body["status"] == "succeeded", body
    assert "report for order A-1001: delivered" in body["output"]
    kinds = [event["type"] for event in events(harness, body["id"])]
    assert kinds.index("sandbox.started") < kinds.index("tool.called") < kinds.index("sandbox.stopped")
    artifacts = client.get(f"/api/runs/{body['id']}/artifacts").json()
    assert [artifact["name"] for artifact in artifacts] == ["report.txt"]
    (reporter,) = [agent for agent in client.get("/api/agents").json()["agents"] if agent["name"] == "reporter"]
    assert reporter["sandbox"] is True and "exec_command" in reporter["tools"]
