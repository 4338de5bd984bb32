"""The code registry of agents a client may run by name.

Each entry builds an SDK `Agent` for a model and says how the deterministic
offline model should drive it (which tool to call for a given input, and how
to phrase the answer), so offline runs exercise real tool calls.

Tools are plain functions here and become SDK function tools only in `build`:
importing the SDK costs seconds of CPU, and the web process, which only needs
the names, never pays it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from django.conf import settings

from artifacts.tools import save_artifact
from common.limits import clip

if TYPE_CHECKING:
    from agents import Agent, FunctionTool, Model, Tool


@dataclass(frozen=True)
class OfflineToolCall:
    name: str
    arguments: dict[str, Any]
    # A custom (free-form) tool such as the sandbox's apply_patch takes raw text instead.
    raw_input: str | None = None


OfflinePlan = OfflineToolCall | list[OfflineToolCall] | None

# Whether a tool call must wait for a person (approvals/): always (True), never (False), or
# when a predicate on the call's arguments says so. A predicate that fails asks a person.
ApprovalRule = bool | Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class AgentSpec:
    name: str
    description: str
    instructions: str
    tools: tuple[Callable[..., Any], ...]
    # For the offline model: the tool call(s) an input asks for, in order (or None) ...
    offline_plan: Callable[[str], OfflinePlan]
    # ... and the answer, from the user's text, the last tool output (if a tool ran) and the turn number.
    offline_reply: Callable[[str, str | None, int], str]
    # Runs its commands in a sandbox (a SandboxAgent with the shell and filesystem tools).
    sandbox: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # The most one run of this agent may use (max_cost_usd, max_tokens, max_turns,
    # max_sandbox_seconds): requests and the server maxima are clamped to these.
    maxima: dict[str, Any] = field(default_factory=dict)
    # Tools (by name) whose calls wait for a person's approval: the run pauses (awaiting_approval).
    approvals: dict[str, ApprovalRule] = field(default_factory=dict)

    @property
    def tool_names(self) -> list[str]:
        names = [tool.__name__ for tool in self.tools]
        return [*names, *SANDBOX_TOOL_NAMES] if self.sandbox else names

    def offline_steps(self, text: str) -> list[OfflineToolCall]:
        plan = self.offline_plan(text)
        if plan is None:
            return []
        return plan if isinstance(plan, list) else [plan]

    def build(self, model: str | Model) -> Agent[Any]:
        from agents import Agent

        tools: list[Tool] = [sdk_tool(tool, self.approvals.get(tool.__name__, False)) for tool in self.tools]
        if not self.sandbox:
            return Agent(name=self.name, instructions=self.instructions, tools=tools, model=model)
        from agents.sandbox import SandboxAgent
        from agents.sandbox.capabilities import Filesystem, Shell
        from agents.sandbox.capabilities.shell import ShellToolSet

        from sandboxes.shell import bound_shell_tools

        gated = settings.HARNESS_SANDBOX_APPROVAL == "always"

        def shell_tools(toolset: ShellToolSet) -> None:
            bound_shell_tools(toolset)
            if gated:  # HARNESS_SANDBOX_APPROVAL=always: every command waits for a person
                toolset.exec_command.needs_approval = True
                if toolset.write_stdin is not None:
                    # Input typed into a running process (a shell, an interpreter) is a command too;
                    # polling a running command for its output (no input) is not.
                    toolset.write_stdin.needs_approval = _writes_input

        return SandboxAgent(
            name=self.name,
            instructions=self.instructions,
            tools=tools,
            model=model,
            capabilities=[Shell(configure_tools=shell_tools), Filesystem()],
        )


async def _writes_input(context: Any, arguments: dict[str, Any], call_id: str) -> bool:
    """write_stdin's approval rule under HARNESS_SANDBOX_APPROVAL=always: only calls that type input."""
    return bool(arguments.get("chars"))


# The tools a sandbox agent gets from the SDK's Shell and Filesystem capabilities.
SANDBOX_TOOL_NAMES = ("exec_command", "write_stdin", "view_image", "apply_patch")


@cache
def sdk_tool(function: Callable[..., Any], needs_approval: ApprovalRule = False) -> FunctionTool:
    """The SDK function tool for `function`, its result cut to HARNESS_TOOL_OUTPUT_MAX_CHARS;
    with `needs_approval`, a call the rule picks pauses the run for a person."""
    from agents import function_tool

    def bound(result: Any) -> Any:
        return clip(result, settings.HARNESS_TOOL_OUTPUT_MAX_CHARS) if isinstance(result, str) else result

    approval = sdk_approval_check(needs_approval)
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def bounded_async(*args: Any, **kwargs: Any) -> Any:
            return bound(await function(*args, **kwargs))

        return function_tool(bounded_async, needs_approval=approval)

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        return bound(function(*args, **kwargs))

    return function_tool(bounded, needs_approval=approval)


def sdk_approval_check(rule: ApprovalRule) -> Any:
    """An ApprovalRule as the SDK's `needs_approval`: a bool, or `(ctx, arguments, call_id) -> bool`.

    The SDK calls a predicate only with arguments it could check unchanged (a value its schema
    would convert, a missing default, asks a person without calling it), so a predicate sees
    what the tool would get. A predicate that raises asks a person too: it never lets a call through.
    """
    if isinstance(rule, bool):
        return rule

    async def needs_approval(context: Any, arguments: dict[str, Any], call_id: str) -> bool:
        try:
            return bool(rule(arguments))
        except Exception:
            return True

    return needs_approval


# --- assistant --------------------------------------------------------------


def text_stats(text: str) -> str:
    """Count the words, characters and lines of a text.

    Args:
        text: The text to measure.
    """
    return json.dumps({"words": len(text.split()), "characters": len(text), "lines": text.count("\n") + 1})


def _assistant_plan(text: str) -> OfflineToolCall | None:
    return OfflineToolCall("text_stats", {"text": text})


def _assistant_reply(text: str, tool_output: str | None, turn: int) -> str:
    stats = json.loads(tool_output) if tool_output else {}
    words = stats.get("words", len(text.split()))
    characters = stats.get("characters", len(text))
    return f"Offline assistant, turn {turn}: you wrote {words} word(s) and {characters} character(s). You said: {text}"


# --- calculator -------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_EXPRESSION = re.compile(r"[-+(]*\s*\d[\d.\s]*(?:\s*(?:\*\*|//|[-+*/%])\s*[-+(]*\s*\d[\d.\s]*\)*)+\)*")


class CalculationError(ValueError):
    pass


def evaluate_arithmetic(expression: str) -> int | float:
    """Evaluate + - * / // % ** on numbers, nothing else (no names, no calls)."""
    if len(expression) > 200:
        raise CalculationError("expression too long (200 characters at most)")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise CalculationError(f"not an arithmetic expression: {expression!r}") from None

    def walk(node: ast.AST) -> int | float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 10**6):
                raise CalculationError("exponent too large")
            try:
                return _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise CalculationError("division by zero") from None
        raise CalculationError(f"unsupported element: {type(node).__name__}")

    return walk(tree)


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (+, -, *, /, //, %, ** and parentheses).

    Args:
        expression: The expression, for example "(2 + 3) * 4".
    """
    try:
        value = evaluate_arithmetic(expression)
    except CalculationError as exc:
        return f"error: {exc}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _calculator_plan(text: str) -> OfflineToolCall | None:
    candidates = [m.group(0).strip() for m in _EXPRESSION.finditer(text)]
    if not candidates:
        return None
    return OfflineToolCall("calculate", {"expression": max(candidates, key=len)})


def _calculator_reply(text: str, tool_output: str | None, turn: int) -> str:
    if tool_output is None:
        return "I can only evaluate arithmetic, for example: what is (2 + 3) * 4?"
    plan = _calculator_plan(text)
    expression = plan.arguments["expression"] if plan else "the expression"
    if tool_output.startswith("error:"):
        return f"I could not evaluate {expression}: {tool_output[len('error:') :].strip()}."
    return f"{expression} = {tool_output}"


# --- scribe ------------------------------------------------------------------


def _scribe_plan(text: str) -> OfflineToolCall | None:
    return OfflineToolCall("save_artifact", {"name": "notes.md", "content": text, "content_type": "text/markdown"})


def _scribe_reply(text: str, tool_output: str | None, turn: int) -> str:
    if tool_output is None or tool_output.startswith("error:"):
        return f"I could not save the file: {tool_output or 'no tool ran'}"
    try:
        saved = json.loads(tool_output)
        return f"Saved {saved['name']} ({saved['size']} bytes) as artifact {saved['artifact_id']}."
    except (ValueError, TypeError, KeyError):
        # The tool failed in a way the SDK reported as text (an exception in the tool, say).
        return f"I could not save the file: {tool_output}"


# --- coder (sandbox) -----------------------------------------------------------

_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_DOLLAR = re.compile(r"^\$ (.+)$", re.MULTILINE)
_SHELLS = {"", "sh", "bash", "shell", "console"}
_PYTHONS = {"python", "python3", "py"}
_PATCHES = {"patch", "apply_patch"}
_IMAGES = {"view_image", "image"}


def _exec(cmd: str) -> OfflineToolCall:
    # Wait as long as the sandbox lets a command run, so the output comes back in one call.
    return OfflineToolCall("exec_command", {"cmd": cmd, "yield_time_ms": 30_000})


def _coder_plan(text: str) -> list[OfflineToolCall] | None:
    """Each fenced block, in order: shell and python run with exec_command, patch with apply_patch,
    view_image opens the path it names.

    Without fences, lines starting with "$ " are shell commands.
    """
    steps: list[OfflineToolCall] = []
    for match in _FENCE.finditer(text):
        language, body = match.group(1).lower(), match.group(2)
        if language in _PATCHES:
            steps.append(OfflineToolCall("apply_patch", {}, raw_input=body))
        elif language in _IMAGES:
            steps.append(OfflineToolCall("view_image", {"path": body.strip()}))
        elif language in _PYTHONS:
            steps.append(_exec(f"python3 - <<'HARNESS_PY'\n{body}\nHARNESS_PY"))
        elif language in _SHELLS:
            steps.append(_exec(body.rstrip("\n")))
    if not steps:
        steps = [_exec(command) for command in _DOLLAR.findall(text)]
    return steps or None


def _coder_reply(text: str, tool_output: str | None, turn: int) -> str:
    if tool_output is None:
        return 'Give me something to run: a fenced ```sh or ```python block, or a line starting with "$ ".'
    return f"Ran it in the sandbox. Last output:\n{tool_output}"


# --- refunds (a tool that needs approval) ----------------------------------------------

_REFUND = re.compile(
    r"refund\s+\$?\s*(?P<amount>\d+(?:\.\d+)?)\s*(?:usd|dollars?)?\s+(?:on|for|to)\s+(?:order\s+)?(?P<order>[A-Za-z0-9][A-Za-z0-9_-]{0,39})",
    re.IGNORECASE,
)


def refund(order_id: str, amount: int | float, reason: str) -> str:
    """Refund an amount of money on a customer's order.

    Args:
        order_id: The order's id, for example "A-1001".
        amount: How much to refund, in USD.
        reason: Why, in a few words.
    """
    if not math.isfinite(amount) or amount <= 0:
        return "error: the amount must be a positive number"
    digest = hashlib.sha256(f"{order_id}:{amount}".encode()).hexdigest()[:10]
    return json.dumps(
        {"refund_id": f"rf_{digest}", "order_id": order_id, "amount": round(float(amount), 2), "status": "refunded"}
    )


def refund_needs_approval(arguments: dict[str, Any]) -> bool:
    """A refund over HARNESS_REFUND_APPROVAL_OVER_USD waits for a person."""
    amount = float(arguments["amount"])
    # NaN and infinities compare as no greater than the threshold: a person looks at those too.
    return not math.isfinite(amount) or amount > settings.HARNESS_REFUND_APPROVAL_OVER_USD


def _refunds_plan(text: str) -> OfflineToolCall | None:
    match = _REFUND.search(text)
    if match is None:
        return None
    value = float(match.group("amount"))
    amount: int | float = int(value) if value.is_integer() else value
    reason = " ".join(text.split())[:200]
    return OfflineToolCall("refund", {"order_id": match.group("order"), "amount": amount, "reason": reason})


def _refunds_reply(text: str, tool_output: str | None, turn: int) -> str:
    if tool_output is None:
        return 'Tell me what to refund, for example: "refund $40 on order A-1001".'
    try:
        done = json.loads(tool_output)
        return f"Refunded ${done['amount']:.2f} on order {done['order_id']} (refund {done['refund_id']})."
    except (ValueError, TypeError, KeyError):
        # A rejected call's output is the person's message: the model reads it and says so.
        return f"The refund was not made: {tool_output}"


AGENTS: dict[str, AgentSpec] = {
    spec.name: spec
    for spec in (
        AgentSpec(
            name="assistant",
            description="A general assistant that can measure text with the text_stats tool.",
            instructions=(
                "You are a concise, helpful assistant. When the user asks about the length or size "
                "of a text, call text_stats instead of counting yourself."
            ),
            tools=(text_stats,),
            offline_plan=_assistant_plan,
            offline_reply=_assistant_reply,
        ),
        AgentSpec(
            name="calculator",
            description="Answers arithmetic exactly by calling the calculate tool.",
            instructions=(
                "You answer arithmetic questions. Always call the calculate tool with the expression "
                "and answer with its exact result; never compute in your head."
            ),
            tools=(calculate,),
            offline_plan=_calculator_plan,
            offline_reply=_calculator_reply,
        ),
        AgentSpec(
            name="scribe",
            description="Writes what you ask for into a file artifact with the save_artifact tool.",
            instructions=(
                "You write documents. Put the document the user asks for into a file with save_artifact "
                "(a short file name, the right content type), then tell the user what you saved."
            ),
            tools=(save_artifact,),
            offline_plan=_scribe_plan,
            offline_reply=_scribe_reply,
        ),
        AgentSpec(
            name="coder",
            description=(
                "Writes and runs code in an isolated sandbox (shell, files, apply_patch). "
                "Files under outputs/ come back as artifacts; files you attach arrive under inputs/."
            ),
            instructions=(
                "You solve tasks by running code in your sandbox workspace with exec_command and editing "
                "files with apply_patch. There is no network. Attached files are in inputs/. Write every "
                "file the user should receive into outputs/: those files become the run's artifacts. "
                "Answer with what you ran and what it printed."
            ),
            tools=(),
            offline_plan=_coder_plan,
            offline_reply=_coder_reply,
            sandbox=True,
        ),
        AgentSpec(
            name="refunds",
            description=(
                "Issues refunds on orders with the refund tool; a refund over HARNESS_REFUND_APPROVAL_OVER_USD "
                "(default $100) waits for a person to approve it."
            ),
            instructions=(
                "You handle refund requests. Call the refund tool with the order id, the amount in USD and a short "
                "reason, then tell the user what happened. If a refund is not made, say why, in the words you were "
                "given."
            ),
            tools=(refund,),
            offline_plan=_refunds_plan,
            offline_reply=_refunds_reply,
            approvals={"refund": refund_needs_approval},
        ),
    )
}


def agent_names() -> list[str]:
    return sorted(AGENTS)


def agent_get(name: str) -> AgentSpec | None:
    return AGENTS.get(name)
