"""What a team's own agent module imports to declare agents for the harness.

    from harness import AgentEntry, OfflineScript, ToolStep, RunContext

A module named in HARNESS_AGENT_MODULES declares `AGENTS`: a list of `AgentEntry`. Importing
this package costs nothing (it does not import the Agents SDK).
"""

from harness.agents import AgentEntry, OfflineScript, RunContext, ToolStep

__all__ = ["AgentEntry", "OfflineScript", "RunContext", "ToolStep"]
