"""The support desk's tools, as plain functions over in-memory data.

`agents.py` turns them into SDK function tools; the docstrings are what the model reads.
"""

from __future__ import annotations

import asyncio
import json
import math

ORDERS: dict[str, dict[str, object]] = {
    "A-1001": {"status": "shipped", "total_usd": 42.0},
    "A-1002": {"status": "processing", "total_usd": 129.5},
    "B-2001": {"status": "delivered", "total_usd": 18.99},
}

STOCK = {"MUG-01": 12, "TEE-M": 0, "CAP-02": 3}


def lookup_order(order_id: str) -> str:
    """Look up an order's status and total.

    Args:
        order_id: The order's id, such as A-1001.
    """
    key = order_id.strip().upper()
    order = ORDERS.get(key)
    if order is None:
        return json.dumps({"order_id": key, "error": "no such order"})
    return json.dumps({"order_id": key, **order})


def refund(order_id: str, amount: float) -> str:
    """Refund part or all of an order.

    Args:
        order_id: The order's id, such as A-1001.
        amount: The amount to refund, in USD.
    """
    key = order_id.strip().upper()
    order = ORDERS.get(key)
    if order is None:
        return json.dumps({"order_id": key, "error": "no such order"})
    total = float(str(order["total_usd"]))
    if not math.isfinite(amount) or amount <= 0 or amount > total:
        return json.dumps({"order_id": key, "error": f"amount must be between 0 and {total:.2f}"})
    return json.dumps({"order_id": key, "refunded_usd": round(amount, 2)})


async def check_stock(sku: str) -> str:
    """How many of a product are in stock.

    Args:
        sku: The product's SKU, such as MUG-01.
    """
    # The stand-in for a warehouse API call.
    await asyncio.sleep(0)
    key = sku.strip().upper()
    if key not in STOCK:
        return json.dumps({"sku": key, "error": "unknown sku"})
    return json.dumps({"sku": key, "in_stock": STOCK[key]})
