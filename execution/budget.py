"""A run's meter: prices each model call as it ends and stops the run before a call
that its limits no longer allow.

Checked before every model call: the run's own spend (max_cost_usd), tokens
(max_tokens) and sandbox seconds (max_sandbox_seconds), and, for a principal with a
daily or monthly limit, the principal's spend so far (one query). A call that crosses
a limit completes; the next one is refused, so a run overspends by at most one call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from billing.pricing import USD, TokenUsage, call_cost
from billing.services import RunLimits, spend_charge, spend_check

logger = logging.getLogger(__name__)

DbCall = Callable[..., Awaitable[Any]]


class BudgetExceeded(Exception):
    """The run reached one of its limits; `limit` names it."""

    def __init__(self, limit: str, message: str, **facts: Any) -> None:
        super().__init__(f"budget_exceeded: {message}")
        self.limit = limit
        self.facts = {"limit": limit, **facts}


class RunMeter:
    def __init__(self, *, model: str, owner_id: int, limits: RunLimits, db: DbCall) -> None:
        self.model, self.owner_id, self.limits, self.db = model, owner_id, limits, db
        self.cost = Decimal(0)
        self.charged = Decimal(0)  # what has already been added to the principal's spend
        self.tokens = 0
        self.unpriced = False
        self.calls: list[dict[str, Any]] = []
        self.sandbox_started: float | None = None

    @property
    def run_cost(self) -> Decimal | None:
        return None if self.unpriced else self.cost.quantize(USD)

    @property
    def sandbox_seconds(self) -> float:
        return 0.0 if self.sandbox_started is None else time.monotonic() - self.sandbox_started

    async def before_call(self) -> None:
        limits = self.limits
        if limits.max_cost_usd is not None and self.cost >= limits.max_cost_usd:
            raise BudgetExceeded(
                "max_cost_usd",
                f"max_cost_usd of ${limits.max_cost_usd} reached: the run has spent ${self.cost.quantize(USD)}",
                limit_usd=str(limits.max_cost_usd),
                spent_usd=str(self.cost.quantize(USD)),
            )
        if limits.max_tokens is not None and self.tokens >= limits.max_tokens:
            raise BudgetExceeded(
                "max_tokens",
                f"max_tokens of {limits.max_tokens} reached: the run has used {self.tokens} tokens",
                max_tokens=limits.max_tokens,
                tokens=self.tokens,
            )
        if limits.max_sandbox_seconds is not None and self.sandbox_seconds >= limits.max_sandbox_seconds:
            raise BudgetExceeded(
                "max_sandbox_seconds",
                f"max_sandbox_seconds of {limits.max_sandbox_seconds:g} reached: the run's sandbox has been up "
                f"{self.sandbox_seconds:.1f} s",
                max_sandbox_seconds=limits.max_sandbox_seconds,
                sandbox_seconds=round(self.sandbox_seconds, 3),
            )
        if limits.spend_limited:
            reached = await self.db(spend_check, owner_id=self.owner_id)
            if reached is not None:
                facts = {key: value for key, value in reached.facts.items() if key != "limit"}
                raise BudgetExceeded(reached.facts["limit"], str(reached), **facts)

    async def after_call(self, usage: Any) -> None:
        counted = TokenUsage.of(usage)
        # A call that reported no usage (a server that does not send it) cannot be priced:
        # the run is unpriced, never a silent $0.
        cost = call_cost(self.model, counted) if usage is not None else None
        self.tokens += counted.total_tokens
        if cost is None:
            self.unpriced = True
            if usage is None:
                logger.warning("a model call reported no token usage: the run is unpriced", extra={"model": self.model})
        else:
            self.cost += cost
        self.calls.append({**counted.as_dict(), "cost_usd": None if cost is None else str(cost)})
        if self.limits.spend_limited and cost:
            # Counted as charged before the write: if the run is cancelled meanwhile, the write
            # still commits on its database thread, and the run's end must not charge it again.
            self.charged += cost
            try:
                await self.db(spend_charge, owner_id=self.owner_id, cost=cost)
            except Exception:
                self.charged -= cost
                logger.exception("charging a model call failed; the run's end charges it")
