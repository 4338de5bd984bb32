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
    from agents import RunConfig, Runner

    from execution.catalog import catalog, catalog_agent, load, mcp_servers
    from execution.offline import OfflineModel

    if isinstance(agent, AgentEntry):
        spec = catalog_agent(agent, module or "tests")
    else:
        agents = load([module]) if module is not None else catalog()
        if agent not in agents:
            raise LookupError(f"unknown agent {agent!r}; the module declares: {', '.join(sorted(agents))}")
        spec = agents[agent]
    if isinstance(script, dict):
        script = OfflineScript.from_data(script)
    model = OfflineModel(spec, script=script)
    built = spec.build(model)
    context = context or RunContext(run_id="run_test", session_id="sess_test", agent=spec.name, model="offline")
    servers = []
    try:
        for server in mcp_servers(built):
            await server.connect()
            servers.append(server)
        return await Runner.run(
            built,
            text,
            context=context,
            max_turns=max_turns,
            run_config=RunConfig(model=model, tracing_disabled=True),
        )
    finally:
        for server in reversed(servers):
            await server.cleanup()
