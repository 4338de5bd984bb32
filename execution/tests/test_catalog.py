"""Loading HARNESS_AGENT_MODULES: what a broken module says, what the workers publish."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.utils import timezone

from execution.catalog import CatalogError, catalog, catalog_publish, load, registry_version
from execution.models import PublishedAgent
from runs.published import published_agents, published_version

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
from agents import Agent, function_tool
from harness import AgentEntry, OfflineScript, ToolStep

@function_tool
def ping(host: str) -> str:
    return "pong " + host

AGENTS = [
    AgentEntry(
        name="pinger",
        description="Pings.",
        agent=Agent(name="Pinger", instructions="Ping.", tools=[ping]),
        models=("offline",),
        approvals={"ping": True},
        max_turns=3,
        timeout_seconds=30,
        offline=OfflineScript(steps=(ToolStep("ping", {"host": "a"}),), answer="{output}"),
    )
]
"""


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write agent modules into an importable package of this test's own."""
    package = tmp_path / "teamagents"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (package / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(f"teamagents.{name}", None)
        return f"teamagents.{name}"

    yield write
    for name in [name for name in sys.modules if name.startswith("teamagents")]:
        sys.modules.pop(name, None)


def test_a_team_module_loads_with_its_policy(modules):
    agents = load([modules("good", GOOD)])
    pinger = agents["pinger"]
    record = pinger.record()
    assert record["tools"] == ["ping"] and record["models"] == ["offline"]
    assert record["approvals"] == {"ping": "always"} and record["maxima"] == {"max_turns": 3}
    assert record["timeout_seconds"] == 30 and record["kind"] == "entry" and record["offline_script"] is True
    assert record["module"] == "teamagents.good" and len(pinger.version) == 16


FACTORY = """
from agents import Agent
from harness import AgentEntry

def build(model):
    return Agent(name="Fresh", instructions="Answer.")

AGENTS = [AgentEntry(name="fresh", description="Built per run.", factory=build)]
"""


def test_an_agent_is_built_once_per_model_unless_its_run_needs_its_own(modules):
    from execution.offline import OfflineModel

    agents = {**load(["runs.registry"]), **load([modules("good", GOOD), modules("factory", FACTORY)])}
    pinger, calculator = agents["pinger"], agents["calculator"]
    # Configuration shared by every run of a model: built once, the declared agent left alone;
    # each run gets its own shallow copy of it (the same tools, settings ... objects).
    one, two = pinger.build("offline"), pinger.build("offline")
    assert one is not two and one.tools[0] is two.tools[0] is pinger.built["offline"].tools[0]
    assert pinger.built["offline"] is not pinger.declared.agent
    assert one.tools[0] is not pinger.declared.agent.tools[0]
    assert pinger.build("offline").tools[0] is not pinger.build("gpt-5.4-mini").tools[0]
    assert calculator.build("offline").tools[0] is calculator.build("offline").tools[0]
    assert pinger.build("offline").tools[0].needs_approval is True
    # Per run: a factory's agents (MCP servers), a sandbox agent's (its sandbox), a Model object's.
    assert agents["fresh"].build("offline") is not agents["fresh"].build("offline")
    assert agents["coder"].build("offline") is not agents["coder"].build("offline")
    assert calculator.build(OfflineModel(calculator)) is not calculator.build(OfflineModel(calculator))


def test_the_version_follows_the_code_of_the_package(modules):
    from execution.catalog import _module_digest

    modules("helpers", "PREFIX = 'pong '\n")
    before = load([modules("good", GOOD)])["pinger"].version
    _module_digest.cache_clear()
    assert load([modules("good", GOOD)])["pinger"].version == before  # the same code: the same version
    _module_digest.cache_clear()
    modules("helpers", "PREFIX = 'PONG '\n")  # a file the agent's module may import changed
    assert load([modules("good", GOOD)])["pinger"].version != before


@pytest.mark.parametrize(
    ("source", "check_id", "fragment"),
    [
        ("raise RuntimeError('no config')\n", "agents.E001", "cannot be imported: RuntimeError: no config"),
        ("import not_a_module_anywhere\n", "agents.E001", "No module named 'not_a_module_anywhere'"),
        ("X = 1\n", "agents.E002", "declares no AGENTS list"),
        ("AGENTS = [42]\n", "agents.E002", "AGENTS[0] is not a usable agent: int is not an AgentEntry"),
        (
            "from harness import AgentEntry\nAGENTS = [AgentEntry(name='Bad Name', description='x', agent=object())]\n",
            "agents.E001",
            "agent name 'Bad Name'",
        ),
        (
            "from harness import AgentEntry\nAGENTS = [AgentEntry(name='x', description='x', agent=object())]\n",
            "agents.E002",
            "agent= object, not an SDK Agent",
        ),
        (
            "from agents import Agent, function_tool\nfrom harness import AgentEntry\n"
            "AGENTS = [AgentEntry(name='x', description='x', agent=Agent(name='x'), approvals={'refund': True})]\n",
            "agents.E004",
            "approvals name 'refund', which is not a function tool of the agent",
        ),
        (
            "from agents import Agent, function_tool, handoff\nfrom harness import AgentEntry\n"
            "@function_tool\ndef refund(amount: float) -> str:\n    return 'done'\n"
            "billing = Agent(name='billing', tools=[refund])\n"
            "AGENTS = [AgentEntry(name='x', description='x', agent=Agent(name='x', handoffs=[handoff(billing)]),"
            " approvals={'refund': True})]\n",
            "agents.E004",
            "a handoff() object's target is not followed",
        ),
        (
            "import sys\nfrom agents import Agent\nfrom agents.mcp import MCPServerStdio\nfrom harness import AgentEntry\n"
            "AGENTS = [AgentEntry(name='x', description='x', agent=Agent(name='x', mcp_servers=["
            "MCPServerStdio(params={'command': sys.executable, 'args': []})]))]\n",
            "agents.E002",
            "must be declared with factory=",
        ),
    ],
)
def test_a_broken_module_is_a_system_check_error(modules, settings, source, check_id, fragment):
    settings.HARNESS_AGENT_MODULES = f"runs.registry, {modules('broken', source)}"
    errors = [error for error in run_checks(tags=["agents"]) if error.id.startswith("agents.")]
    assert [error.id for error in errors] == [check_id], errors
    assert fragment in errors[0].msg and "teamagents.broken" in errors[0].msg
    assert errors[0].hint


def test_two_agents_of_one_name_clash(modules, settings):
    settings.HARNESS_AGENT_MODULES = f"{modules('one', GOOD)},{modules('two', GOOD)}"
    with pytest.raises(CatalogError) as caught:
        catalog()
    ((check_id, message, _),) = caught.value.errors
    assert check_id == "agents.E003"
    assert message == "HARNESS_AGENT_MODULES: agent 'pinger' is declared by both teamagents.one and teamagents.two"


def test_publishing_replaces_the_registry_the_web_reads(modules, settings, db):
    settings.HARNESS_AGENT_MODULES = f"runs.registry,{modules('good', GOOD)}"
    assert catalog_publish("worker-a") == 6
    agents = published_agents()
    assert sorted(agents) == ["assistant", "calculator", "coder", "pinger", "refunds", "scribe"]
    assert agents["pinger"].models == ["offline"] and agents["coder"].sandbox
    assert published_version(agents) == registry_version()
    # A deploy that drops an agent: the next publisher's registry replaces this one.
    from execution.catalog import catalog_reset

    settings.HARNESS_AGENT_MODULES = "runs.registry"
    catalog_reset()
    assert catalog_publish("worker-b") == 5
    assert not PublishedAgent.objects.filter(name="pinger").exists()
    assert set(PublishedAgent.objects.values_list("publisher", flat=True)) == {"worker-b"}


def test_the_run_engine_refuses_to_start_with_a_broken_module(tmp_path):
    package = tmp_path / "brokenteam"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "agents.py").write_text("import not_a_module_anywhere\n")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "harness_site.settings",
        "HARNESS_IGNORE_ENV_FILE": "1",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "HARNESS_VAR_DIR": str(tmp_path / "var"),
        "HARNESS_AGENT_MODULES": "brokenteam.agents",
        "PYTHONPATH": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "runengine"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "agents.E001" in out.stderr and "brokenteam.agents" in out.stderr, out.stderr[-2000:]
    assert "No module named 'not_a_module_anywhere'" in out.stderr


def test_operators_see_the_published_agents_in_the_admin(client, operator, viewer, db):
    from execution.models import WorkerBeat

    catalog_publish("worker-a")
    WorkerBeat.objects.create(
        worker_id="worker-a",
        hostname="h",
        pid=1,
        concurrency=10,
        started_at=timezone.now(),
        seen_at=timezone.now(),
        registry_version=registry_version(),
    )
    client.force_login(viewer)
    page = client.get("/admin/execution/publishedagent/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "calculator" in text and "runs.registry" in text and "exec_command" in text
    detail = client.get("/admin/execution/publishedagent/refunds/change/")
    assert detail.status_code == 200 and "refund" in detail.content.decode()
    assert client.post("/admin/execution/publishedagent/refunds/delete/").status_code == 403
    workers = client.get("/admin/execution/workerbeat/").content.decode()
    assert registry_version() in workers


def test_the_web_alone_starts_whatever_the_agent_modules(tmp_path):
    """`runharness --no-worker` (the web container) never loads the agents' code."""
    import signal
    import time

    import httpx

    from tests.integration.harness import free_port

    port = free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("HARNESS_", "DATABASE_"))},
        "DJANGO_SETTINGS_MODULE": "harness_site.settings",
        "HARNESS_IGNORE_ENV_FILE": "1",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "HARNESS_VAR_DIR": str(tmp_path / "var"),
        "HARNESS_AGENT_MODULES": "no_such_team.agents",
    }
    web = subprocess.Popen(
        [sys.executable, "manage.py", "runharness", "--no-worker", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert web.poll() is None, web.stderr.read().decode()[-2000:] if web.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the web did not come up"
            time.sleep(0.2)
    finally:
        os.killpg(web.pid, signal.SIGINT)
        web.wait(timeout=30)
