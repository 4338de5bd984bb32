"""An MCP server over stdio whose one tool answers with as many characters as it is asked for.

    python tests/integration/flood_mcp_server.py

Started by tests.integration.flood_agents, one per run; it imports nothing of the harness.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("flood")


@server.tool()
def flood(chars: int) -> str:
    """`chars` characters of text.

    Args:
        chars: How many characters to answer with.
    """
    return "m" * chars


if __name__ == "__main__":
    server.run()
