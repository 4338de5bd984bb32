"""Testing a team's agents with no model key: one agent, in memory, on the offline model.

    from harness.testing import run_offline

    result = asyncio.run(run_offline("support", "Where is order A-1001?", module="myteam.agents"))
    assert result.final_output == "..."

The agent is built as the run engine builds it (tool outputs capped, approval rules applied,
its MCP servers connected for the run and closed after it) and driven by its offline script
(or `script`); nothing is stored and no trace is recorded. Needs Django's settings (pytest-django
or `django.setup()`).
"""

from __future__ import annotations

from typing import Any

from harness.agents import AgentEntry, OfflineScript, RunContext


async def run_offline(
    agent: AgentEntry | str,
    text: str,
    *,
    script: OfflineScript | dict[str, Any] | None = None,
    module: str | None = None,
    context: RunContext | None = None,
    max_turns: int = 10,
) -> Any:
    """Run `agent` (an entry, or a name from `module` or HARNESS_AGENT_MODULES) on `text`;
    the SDK's RunResult (guardrails raise their Tripwire exceptions, as in the SDK)."""
    from execution.offline import OfflineModel

    spec = _spec(agent, module)
    if isinstance(script, dict):
        script = OfflineScript.from_data(script)
    return await _run(spec, text, OfflineModel(spec, script=script), context=context, max_turns=max_turns)


async def record_case(
    agent: AgentEntry | str, text: str, *, module: str | None = None, name: str = "", tags: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A golden case (the format of `manage.py dumpgolden`/`loadgolden`) recorded from one
    offline run: its exact output, the tools it called (handoffs too) and its cassette."""
    from execution.cassette import RecordingModel
    from execution.executor import _final_output
    from execution.offline import OfflineModel

    spec = _spec(agent, module)
    recorder = RecordingModel(OfflineModel(spec))
    result = await _run(spec, text, recorder)
    called: list[str] = []
    for item in result.new_items:
        if item.type in ("tool_call_item", "handoff_call_item"):
            raw = item.raw_item
            tool = raw.get("name") if isinstance(raw, dict) else getattr(raw, "name", None)
            if tool and tool not in called:
                called.append(str(tool))
    from evals.models import new_case_id

    return {
        "id": new_case_id(),
        "name": name or f"{spec.name}: {text[:60]}",
        "agent": spec.name,
        "model": "offline",
        "input": text,
        "history": [],
        "expected_output": _final_output(result.final_output).output,
        "output_match": "exact",
        "assertions": [],
        "expected_tools": [{"name": tool} for tool in called],
        "forbidden_tools": [],
        "cassette": recorder.calls,
        "tags": list(tags),
        "active": True,
    }


def _spec(agent: AgentEntry | str, module: str | None) -> Any:
    from execution.catalog import catalog, catalog_agent, load

    if isinstance(agent, AgentEntry):
        return catalog_agent(agent, module or "tests")
    agents = load([module]) if module is not None else catalog()
    if agent not in agents:
        raise LookupError(f"unknown agent {agent!r}; the module declares: {', '.join(sorted(agents))}")
    return agents[agent]


async def _run(spec: Any, text: str, model: Any, *, context: RunContext | None = None, max_turns: int = 10) -> Any:
    from agents import RunConfig, Runner

    from execution.catalog import mcp_servers

    built = spec.build(model)
    context = context or RunContext(run_id="run_test", session_id="sess_test", agent=spec.name, model="offline")
    servers: list[Any] = []
    try:
        for server in mcp_servers(built):
            servers.append(server)
            await server.connect()
        return await Runner.run(
            built, text, context=context, max_turns=max_turns, run_config=RunConfig(model=model, tracing_disabled=True)
        )
    finally:
        for server in reversed(servers):
            await server.cleanup()
