"""Agents whose tools answer with more than a tool may give the model, whatever the form:
a dict, structured text parts, and an MCP tool over stdio (tests/integration/flood_mcp_server.py).

    HARNESS_AGENT_MODULES=runs.registry,tests.integration.flood_agents

Runs drive them with their own `offline_script`; the answer `{output}` is the tool output the
offline model was given.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from agents import Agent, ToolOutputText, function_tool
from agents.mcp import MCPServerStdio

from harness import AgentEntry, RunContext

SERVER = Path(__file__).resolve().with_name("flood_mcp_server.py")


@function_tool
def flood_dict(chars: int) -> dict[str, Any]:
    """A dict holding `chars` characters.

    Args:
        chars: How many characters the dict holds.
    """
    return {"data": "d" * chars}


@function_tool
def flood_parts(chars: int) -> list[ToolOutputText]:
    """Two text parts of `chars` characters each.

    Args:
        chars: How many characters each part holds.
    """
    return [ToolOutputText(text="a" * chars), ToolOutputText(text="b" * chars)]


def build_flood_mcp(model_name: str) -> Agent[RunContext]:
    server = MCPServerStdio(
        name="flood", params={"command": sys.executable, "args": [str(SERVER)]}, cache_tools_list=True
    )
    return Agent[RunContext](name="flood_mcp", instructions="Call flood.", mcp_servers=[server])


AGENTS = [
    AgentEntry(
        name="flood",
        description="Function tools that answer with a dict and with text parts of any size.",
        agent=Agent[RunContext](name="flood", instructions="Call a tool.", tools=[flood_dict, flood_parts]),
        models=("offline",),
    ),
    AgentEntry(
        name="flood_mcp",
        description="An MCP tool that answers with any number of characters.",
        factory=build_flood_mcp,
        models=("offline",),
    ),
]
