"""The support desk's agents, declared for the harness.

    HARNESS_AGENT_MODULES=examples.support_desk.agents make run

- "support": a triage agent (dynamic instructions, an async function tool, an input and an
  output guardrail) that hands billing questions off to a billing agent (a sync function
  tool, and a refund tool that waits for a person above $50).
- "classifier": an agent whose answer is a `Ticket` (structured output).
- "shipping": an agent whose tool comes from an MCP server over stdio (`mcp_server.py`),
  built by a factory so that each run starts its own server.
- "reporter": a `SandboxAgent` whose shell commands run in the run's sandbox; what it writes
  under outputs/ comes back as the run's artifacts.

Every entry has an offline script, so each runs on the offline model with no key. Importing
this module starts nothing: the MCP server starts when a run connects to it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

from agents import (
    Agent,
    GuardrailFunctionOutput,
    RunContextWrapper,
    TResponseInputItem,
    function_tool,
    input_guardrail,
    output_guardrail,
)
from agents.mcp import MCPServerStdio
from agents.sandbox import SandboxAgent
from agents.sandbox.capabilities import Filesystem
from pydantic import BaseModel

from examples.support_desk import tools
from harness import AgentEntry, OfflineScript, RunContext, ToolStep
from harness.sandbox import shell

MODELS = ("offline", "gpt-4.1-mini")
MCP_SERVER = Path(__file__).resolve().with_name("mcp_server.py")

# 13 to 16 digits, optionally grouped by single spaces or dashes: a payment card number.
CARD_NUMBER = re.compile(r"(?<!\d)(?:\d[ -]?){12,15}\d(?!\d)")
ORDER_ID = re.compile(r"\b([A-Z]-\d{4})\b", re.IGNORECASE)
SKU = re.compile(r"\b([A-Z]{2,}-[A-Z0-9]{1,4})\b", re.IGNORECASE)
AMOUNT = re.compile(r"\$\s*(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*(?:usd|dollars?)\b", re.IGNORECASE)


class Ticket(BaseModel):
    """A support message, classified."""

    category: Literal["billing", "shipping", "other"]
    urgent: bool
    summary: str


# --- guardrails ------------------------------------------------------------------------------


def text_of(value: str | list[TResponseInputItem]) -> str:
    """The text of a run's input, whether a message or a list of items."""
    if isinstance(value, str):
        return value
    parts: list[str] = []
    for item in value:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "\n".join(parts)


# Not in parallel with the first model call: a card number must never reach the model.
@input_guardrail(name="no_card_numbers", run_in_parallel=False)
def no_card_numbers(
    ctx: RunContextWrapper[RunContext], agent: Agent[RunContext], input: str | list[TResponseInputItem]
) -> GuardrailFunctionOutput:
    found = CARD_NUMBER.search(text_of(input)) is not None
    return GuardrailFunctionOutput(output_info={"card_number": found}, tripwire_triggered=found)


@output_guardrail(name="no_internal_codes")
def no_internal_codes(
    ctx: RunContextWrapper[RunContext], agent: Agent[RunContext], output: Any
) -> GuardrailFunctionOutput:
    found = "INTERNAL-" in str(output)
    return GuardrailFunctionOutput(output_info={"internal_code": found}, tripwire_triggered=found)


# --- support: triage hands off to billing ----------------------------------------------------


def triage_instructions(ctx: RunContextWrapper[RunContext], agent: Agent[RunContext]) -> str:
    """Instructions that name the run they serve (`ctx.context` is None outside the harness)."""
    context = ctx.context
    if isinstance(context, RunContext):
        # Only the ids an eval's replay masks: any other value that differs between a recorded
        # run and its replay (the model, the attempt) would read as a changed prompt.
        run = f"Run {context.run_id} (session {context.session_id})."
    else:
        run = "Run: none (outside the harness)."
    return (
        f"You are {agent.name}, the first agent of a shop's support desk. {run} "
        "Hand questions about orders, payments and refunds to billing. "
        "Answer stock questions with check_stock. Never ask for a card number."
    )


billing = Agent[RunContext](
    name="billing",
    handoff_description="Orders, payments and refunds.",
    instructions=(
        "You handle orders, payments and refunds. Look the order up before you answer; "
        "refund only what the customer asks for, and never more than the order's total."
    ),
    tools=[function_tool(tools.lookup_order), function_tool(tools.refund)],
    output_guardrails=[no_internal_codes],
)

triage = Agent[RunContext](
    name="triage",
    instructions=triage_instructions,
    tools=[function_tool(tools.check_stock)],
    handoffs=[billing],
    input_guardrails=[no_card_numbers],
    output_guardrails=[no_internal_codes],
)


def support_script(text: str) -> OfflineScript:
    """How the offline model drives "support": who-am-i, refund, order, stock, or a plain
    answer; "leak" prefixes the answer with an internal code (the output guardrail trips)."""
    lowered = text.lower()
    order = _order_id(text)
    steps: tuple[ToolStep, ...] = ()
    if "who am i" in lowered:
        answer = "{instructions}"
    elif "refund" in lowered:
        steps = (ToolStep("transfer_to_billing"), ToolStep("refund", {"order_id": order, "amount": _amount(text)}))
        answer = "Refund: {output}"
    elif "order" in lowered:
        steps = (ToolStep("transfer_to_billing"), ToolStep("lookup_order", {"order_id": order}))
        answer = "Order status: {output}"
    elif "stock" in lowered:
        match = SKU.search(text)
        steps = (ToolStep("check_stock", {"sku": match.group(1).upper() if match else "MUG-01"}),)
        answer = "Stock: {output}"
    else:
        answer = "Support desk here. You said: {input}"
    if "leak" in lowered:
        answer = f"INTERNAL-42 {answer}"
    return OfflineScript(steps=steps, answer=answer)


def _order_id(text: str) -> str:
    match = ORDER_ID.search(text)
    return match.group(1).upper() if match else "A-1001"


def _amount(text: str) -> float:
    match = AMOUNT.search(text)
    return float(match.group(1) or match.group(2)) if match else 10.0


def refund_needs_approval(arguments: dict[str, Any]) -> bool:
    """Refunds over $50 wait for a person; so does one whose amount is not a number (NaN
    compares false with everything, and a predicate that raises asks a person)."""
    return not float(arguments.get("amount", 0)) <= 50


# --- classifier: structured output -----------------------------------------------------------

classifier = Agent[RunContext](
    name="classifier",
    instructions=(
        "Classify the customer's message: its category (billing, shipping or other), whether it is "
        "urgent, and a one-sentence summary."
    ),
    output_type=Ticket,
)


def classifier_script(text: str) -> OfflineScript:
    """A Ticket from keywords, as the offline model's answer."""
    lowered = text.lower()
    if any(word in lowered for word in ("refund", "charge", "invoice", "payment", "bill")):
        category = "billing"
    elif any(word in lowered for word in ("ship", "deliver", "arrive", "parcel", "eta")):
        category = "shipping"
    else:
        category = "other"
    urgent = any(word in lowered for word in ("urgent", "asap", "immediately"))
    return OfflineScript(answer={"category": category, "urgent": urgent, "summary": "{input}"})


# --- shipping: a tool from an MCP server -----------------------------------------------------


def build_shipping(model_name: str) -> Agent[RunContext]:
    """A shipping agent with its own MCP server (the harness connects it for the run and
    closes it after; the model comes from the run)."""
    server = MCPServerStdio(
        name="shipping",
        params={"command": sys.executable, "args": [str(MCP_SERVER)]},
        cache_tools_list=True,
    )
    return Agent[RunContext](
        name="shipping",
        instructions="You answer when orders will arrive. Use shipping_eta with the order's id.",
        mcp_servers=[server],
    )


def shipping_script(text: str) -> OfflineScript:
    return OfflineScript(steps=(ToolStep("shipping_eta", {"order_id": _order_id(text)}),), answer="ETA: {output}")


# --- reporter: a SandboxAgent --------------------------------------------------------------


def build_reporter(model_name: str) -> SandboxAgent[RunContext]:
    """An agent that works in the run's sandbox; files it writes under outputs/ become the
    run's artifacts. Built per run: a sandbox agent's capabilities bind to the run's sandbox."""
    return SandboxAgent[RunContext](
        name="reporter",
        instructions=(
            "You write reports with shell commands in your sandbox. Write the report the user asks for "
            "to outputs/report.txt, then answer with what it says."
        ),
        capabilities=[shell(), Filesystem()],
    )


def reporter_script(text: str) -> OfflineScript:
    order = _order_id(text)
    command = f"mkdir -p outputs && printf 'report for order %s: delivered\\n' {order} > outputs/report.txt && cat outputs/report.txt"
    return OfflineScript(
        steps=(ToolStep("exec_command", {"cmd": command, "yield_time_ms": 30_000}),), answer="Report written. {output}"
    )


AGENTS = [
    AgentEntry(
        name="support",
        description="The support desk: triage, with billing (orders, refunds) behind a handoff.",
        agent=triage,
        models=MODELS,
        approvals={"refund": refund_needs_approval},
        max_turns=8,
        timeout_seconds=60,
        offline=support_script,
    ),
    AgentEntry(
        name="classifier",
        description="Classifies a support message as a Ticket: category, urgency, summary.",
        agent=classifier,
        models=MODELS,
        offline=classifier_script,
    ),
    AgentEntry(
        name="reporter",
        description="Writes a report in a sandbox; outputs/report.txt comes back as an artifact.",
        factory=build_reporter,
        models=MODELS,
        timeout_seconds=120,
        offline=reporter_script,
    ),
    AgentEntry(
        name="shipping",
        description="Delivery estimates from the shipping MCP server.",
        factory=build_shipping,
        models=MODELS,
        offline=shipping_script,
    ),
]
