"""The shipping MCP server: one tool, `shipping_eta`, over stdio.

    python -m examples.support_desk.mcp_server
    python examples/support_desk/mcp_server.py

The "shipping" agent starts it as a subprocess (`MCPServerStdio`), one per run. It imports
nothing from the harness or the rest of this package, so it runs from its path alone.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

# Business days until delivery, per order; anything else is not in transit.
ETAS = {"A-1001": 2, "A-1002": 5, "B-2001": 1}

server = MCPServer("shipping")


@server.tool()
def shipping_eta(order_id: str) -> str:
    """When an order will arrive.

    Args:
        order_id: The order's id, such as A-1001.
    """
    days = ETAS.get(order_id.strip().upper())
    if days is None:
        return f"order {order_id} is not in transit"
    return f"order {order_id.strip().upper()} arrives in {days} business day{'s' if days != 1 else ''}"


if __name__ == "__main__":
    server.run()
