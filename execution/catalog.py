"""The agents this worker runs: loaded from HARNESS_AGENT_MODULES, checked, and published.

Each module named in HARNESS_AGENT_MODULES declares `AGENTS`: `harness.AgentEntry` objects
(an SDK Agent, or a factory, and its policy) or the built-in demos' `runs.registry.AgentSpec`
(a dict of them is accepted too). Loading them imports the Agents SDK and the team's code,
so only execution processes (the run engine, the eval runner, migrate) do it.

A broken module, a declaration that is not an agent, two entries with one name, or approval
rules for tools the agent does not have are system check errors (agents.E001-E004) that stop
the run engine at startup, and `manage.py preflight` says so too.

The workers publish what they load (execution.models.PublishedAgent: names, descriptions,
tools, models, policy and a version hash per agent) when they start and after every
migrate; the web process validates runs against that table and never imports the modules.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.checks import Error, register

from common.limits import clip, truncation_marker
from execution.sdk import for_run, mark_shared
from harness.agents import AgentEntry, OfflineScript
from runs.registry import SANDBOX_TOOL_NAMES, AgentSpec, OfflineToolCall, sdk_approval_check

if TYPE_CHECKING:
    from agents import Agent


class CatalogError(Exception):
    """HARNESS_AGENT_MODULES cannot be loaded; `errors` are (check id, message, hint)."""

    def __init__(self, errors: list[tuple[str, str, str]]) -> None:
        super().__init__("; ".join(message for _, message, _ in errors))
        self.errors = errors


@dataclass
class CatalogAgent:
    """One runnable agent, whichever way it was declared: what the executor, the offline
    model and the published registry need of it."""

    name: str
    description: str
    module: str
    declared: AgentEntry | AgentSpec
    models: tuple[str, ...] | None = None
    sandbox: bool = False
    maxima: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float | None = None
    tool_names: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    # Built agents by model name, for agents that need nothing of their run (see build).
    built: dict[str, Agent[Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def approvals(self) -> dict[str, Any]:
        return dict(self.declared.approvals)

    @property
    def reusable(self) -> bool:
        """Whether one built SDK agent serves every run of a model: not a sandbox agent (its
        capabilities are bound to the run's sandbox) and not a factory's (it builds per run,
        MCP servers included). The SDK's Agent is configuration; concurrent runs share it."""
        return not self.sandbox and not (isinstance(self.declared, AgentEntry) and self.declared.factory is not None)

    def build(self, model: Any) -> Agent[Any]:
        """The SDK agent for a run (tool outputs capped, approval rules applied): built once
        per process and model name where `reusable` (each run gets its own shallow copy,
        `sdk.for_run`), else fresh. `model` is the run's model
        (its name, or the Model object that will answer)."""
        if not isinstance(model, str) or not self.reusable:
            return self._build(model)
        agent = self.built.get(model)
        if agent is None:
            agent = self.built[model] = self._build(model)
            mark_shared(agent)  # shared by this process's runs, so never changed
        return for_run(agent)

    def _build(self, model: Any) -> Agent[Any]:
        if isinstance(self.declared, AgentSpec):
            return self.declared.build(model)
        entry = self.declared
        if entry.factory is not None:
            name = model if isinstance(model, str) else getattr(model, "model_name", "") or settings.HARNESS_MODEL
            agent = entry.factory(name)
        else:
            agent = entry.agent
        return prepared(agent, dict(entry.approvals))

    # --- the offline model's side -------------------------------------------------------

    def offline_steps(self, text: str, script: OfflineScript | None = None) -> list[OfflineToolCall]:
        if script is None and isinstance(self.declared, AgentSpec):
            return self.declared.offline_steps(text)
        script = script if script is not None else self._script(text)
        if script is None:
            return []
        return [OfflineToolCall(step.tool, dict(step.arguments), step.raw_input) for step in script.steps]

    def offline_reply(
        self,
        text: str,
        tool_output: str | None,
        turn: int,
        *,
        instructions: str = "",
        agent: str = "",
        script: OfflineScript | None = None,
    ) -> str:
        if script is None and isinstance(self.declared, AgentSpec):
            return self.declared.offline_reply(text, tool_output, turn)
        script = script if script is not None else self._script(text)
        if script is None:
            return (
                f"Offline model: agent {self.name!r} declares no offline script, so this is all it answers "
                f"(declare AgentEntry(offline=...) or send offline_script with the run). You said: {text}"
            )
        return script.render_answer(input=text, output=tool_output, instructions=instructions, agent=agent or self.name)

    def _script(self, text: str) -> OfflineScript | None:
        return self.declared.offline_script(text) if isinstance(self.declared, AgentEntry) else None

    def record(self) -> dict[str, Any]:
        """What the workers publish of this agent (execution.models.PublishedAgent.spec)."""
        return {
            "description": self.description,
            "module": self.module,
            "tools": self.tool_names,
            "models": list(self.models) if self.models is not None else None,
            "sandbox": self.sandbox,
            "approvals": {
                tool: ("always" if rule is True else "conditional")
                for tool, rule in self.approvals.items()
                if rule is not False
            },
            "maxima": {key: value for key, value in self.maxima.items()},
            "timeout_seconds": self.timeout_seconds,
            **self.facts,
        }


# --- preparing an SDK agent for a run ----------------------------------------------------------


def prepared(agent: Any, approvals: dict[str, Any]) -> Any:
    """A copy of `agent` and of the agents it hands off to, whose function tools return at
    most HARNESS_TOOL_OUTPUT_MAX_CHARS and wait for a person where `approvals` says so.
    The declared objects are left as they were (other runs share them)."""
    from agents import Agent

    copies: dict[int, Any] = {}

    def copy(original: Any) -> Any:
        if id(original) in copies:
            return copies[id(original)]
        clone = original.clone()
        copies[id(original)] = clone
        clone.tools = [_tool(tool, approvals) for tool in original.tools]
        clone.handoffs = [copy(target) if isinstance(target, Agent) else target for target in original.handoffs]
        return clone

    return copy(agent)


def _tool(tool: Any, approvals: dict[str, Any]) -> Any:
    from agents import FunctionTool

    if not isinstance(tool, FunctionTool):
        return tool
    invoke = tool.on_invoke_tool

    async def bounded(context: Any, arguments: str) -> Any:
        result = await invoke(context, arguments)
        return clip(result, settings.HARNESS_TOOL_OUTPUT_MAX_CHARS) if isinstance(result, str) else result

    changes: dict[str, Any] = {"on_invoke_tool": bounded}
    if tool.name in approvals:
        changes["needs_approval"] = sdk_approval_check(approvals[tool.name])
    return dataclasses.replace(tool, **changes)


# --- what a tool gives the model ---------------------------------------------------------------

# The keys of a structured tool output's parts that hold text the model reads (input_text
# parts, the shell tools' stdout and stderr); images and files are not text and pass whole.
_TEXT_KEYS = ("text", "stdout", "stderr")


def tool_outputs_capped(data: Any) -> Any:
    """The runs' `RunConfig.call_model_input_filter`: every tool result in what the model is
    sent, whatever gave it (a function tool's string, dict or text parts, an MCP tool, a
    handoff, a sandbox or shell tool), holds at most HARNESS_TOOL_OUTPUT_MAX_CHARS characters
    of text, with the truncation marker. Only the model's copy of the input is cut: the run's
    events and session keep what the tool answered (up to HARNESS_MAX_STORED_CHARS)."""
    cap = settings.HARNESS_TOOL_OUTPUT_MAX_CHARS
    model_data = data.model_data
    items = model_data.input  # the SDK's copy of the list for this call; the items are shared
    for index, item in enumerate(items):
        if isinstance(item, dict) and "output" in item and str(item.get("type", "")).endswith("_output"):
            output = _output_capped(item["output"], cap)
            if output is not item["output"]:
                items[index] = {**item, "output": output}
    return model_data


def _output_capped(output: Any, cap: int) -> Any:
    """`output` (a string, or structured parts) with at most `cap` characters of text, or
    `output` itself when it has no more."""
    if isinstance(output, str):
        return clip(output, cap)
    parts = output if isinstance(output, list) else [output]
    total = sum(len(part[key]) for part in parts if isinstance(part, dict) for key in _text_keys(part))
    if total <= cap:
        return output
    room = max(0, cap - len(truncation_marker(total, total)))
    kept = 0
    capped: list[Any] = []
    for part in parts:
        keys = _text_keys(part) if isinstance(part, dict) else []
        if not keys:
            capped.append(part)
            continue
        if kept >= room and part.get("type") in ("input_text", "text"):
            continue  # a text part with no room left is dropped; the marker says so
        changes = {}
        for key in keys:
            take = part[key][: room - kept]
            kept += len(take)
            changes[key] = take
        capped.append({**part, **changes})
    # The marker goes on the last text kept (the first always is: the cap leaves it room).
    position = max(i for i, part in enumerate(capped) if isinstance(part, dict) and _text_keys(part))
    part = capped[position]
    key = _text_keys(part)[-1]
    capped[position] = {**part, key: part[key] + truncation_marker(total, kept)}
    return capped if isinstance(output, list) else capped[0]


def tool_output_text(output: Any) -> str | None:
    """A tool output item's output as the model reads it: a string as it is, structured parts'
    texts (a shell tool's stdout and stderr) joined, an image or a file named by its type; None
    for anything else."""
    if isinstance(output, str):
        return output
    parts = output if isinstance(output, list) else [output]
    if not parts or not all(isinstance(part, dict) for part in parts):
        return None
    texts: list[str] = []
    for part in parts:
        keys = _text_keys(part)
        if keys:
            texts.extend(part[key] for key in keys if part[key])
        elif isinstance(part.get("type"), str):
            texts.append(f"[{part['type']}]")
    return "\n".join(texts) if texts else None


def _text_keys(part: dict[str, Any]) -> list[str]:
    return [key for key in _TEXT_KEYS if isinstance(part.get(key), str)]


# --- loading ---------------------------------------------------------------------------------


def module_names() -> list[str]:
    return [name.strip() for name in settings.HARNESS_AGENT_MODULES.split(",") if name.strip()]


def load(modules: list[str] | None = None) -> dict[str, CatalogAgent]:
    """Import the modules and collect their agents; CatalogError lists every problem."""
    errors: list[tuple[str, str, str]] = []
    found: dict[str, CatalogAgent] = {}
    for module_name in modules if modules is not None else module_names():
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            at = f" ({where.filename}:{where.lineno})" if where else ""
            errors.append(
                (
                    "agents.E001",
                    f"HARNESS_AGENT_MODULES: module {module_name!r} cannot be imported: "
                    f"{type(exc).__name__}: {exc}{at}",
                    "Fix the module, or remove it from HARNESS_AGENT_MODULES (comma-separated dotted paths).",
                )
            )
            continue
        declared = getattr(module, "AGENTS", None)
        if isinstance(declared, dict):
            declared = list(declared.values())
        if not isinstance(declared, list | tuple):
            errors.append(
                (
                    "agents.E002",
                    f"HARNESS_AGENT_MODULES: module {module_name!r} declares no AGENTS list",
                    "Declare AGENTS = [harness.AgentEntry(name=..., description=..., agent=...), ...] in it.",
                )
            )
            continue
        for index, item in enumerate(declared):
            try:
                agent = catalog_agent(item, module_name)
            except PolicyError as exc:
                errors.append(
                    (
                        "agents.E004",
                        f"HARNESS_AGENT_MODULES: {module_name}.AGENTS[{index}]: {exc}",
                        "Name only function tools the agent can call in AgentEntry(approvals=...).",
                    )
                )
                continue
            except Exception as exc:
                errors.append(
                    (
                        "agents.E002",
                        f"HARNESS_AGENT_MODULES: {module_name}.AGENTS[{index}] is not a usable agent: {exc}",
                        "Each item is a harness.AgentEntry holding an SDK Agent (or a factory returning one).",
                    )
                )
                continue
            if agent.name in found:
                errors.append(
                    (
                        "agents.E003",
                        f"HARNESS_AGENT_MODULES: agent {agent.name!r} is declared by both "
                        f"{found[agent.name].module} and {module_name}",
                        "Agent names are unique across all modules: rename one.",
                    )
                )
                continue
            found[agent.name] = agent
    if errors:
        raise CatalogError(errors)
    return found


def catalog_agent(item: Any, module_name: str) -> CatalogAgent:
    if isinstance(item, AgentSpec):
        agent = CatalogAgent(
            name=item.name,
            description=item.description,
            module=module_name,
            declared=item,
            sandbox=item.sandbox,
            maxima=dict(item.maxima),
            tool_names=item.tool_names,
        )
        agent.facts = {"kind": "builtin"}
        agent.version = _version(agent, module_name)
        return agent
    if not isinstance(item, AgentEntry):
        raise TypeError(f"{type(item).__name__} is not an AgentEntry")
    from agents import Agent
    from agents.handoffs import Handoff
    from agents.sandbox import SandboxAgent

    model = item.models[0] if item.models else settings.HARNESS_MODEL
    built = item.factory(model) if item.factory is not None else item.agent
    if not isinstance(built, Agent):
        made = "its factory returned" if item.factory is not None else "agent="
        raise TypeError(f"{made} {type(built).__name__}, not an SDK Agent")
    if item.factory is None and mcp_servers(built):
        raise TypeError(
            "an agent with MCP servers must be declared with factory=, so that each run gets its own servers"
        )
    reachable = _reachable(built)
    # The tools of the agent and of the agents it hands off to: what the approval rules and the
    # output cap apply to (prepared), and what the console's tool filter offers.
    tools = list(dict.fromkeys(tool.name for current in reachable for tool in current.tools))
    gated = {tool.name for current in reachable for tool in current.tools if _is_function_tool(tool)}
    ungated = sorted(set(item.approvals) - gated)
    if ungated:
        raise PolicyError(
            f"approvals name {', '.join(map(repr, ungated))}, which is not a function tool of the agent or of an "
            "agent it hands off to (a handoff() object's target is not followed: list the Agent in handoffs=; "
            "MCP tools take approval through the server's require_approval)"
        )
    handoffs = [
        target.tool_name if isinstance(target, Handoff) else Handoff.default_tool_name(target)
        for target in built.handoffs
    ]
    sandbox = isinstance(built, SandboxAgent)
    output_type = getattr(built.output_type, "__name__", None) if built.output_type is not None else None
    agent = CatalogAgent(
        name=item.name,
        description=item.description,
        module=module_name,
        declared=item,
        models=item.models,
        sandbox=sandbox,
        maxima=item.maxima,
        timeout_seconds=item.timeout_seconds,
        tool_names=[*tools, *handoffs, *(SANDBOX_TOOL_NAMES if sandbox else ())],
    )
    agent.facts = {
        "kind": "entry",
        "sdk_agent": built.name,
        "handoffs": handoffs,
        "output_type": output_type,
        "guardrails": {
            "input": [_guardrail_name(guardrail) for guardrail in built.input_guardrails],
            "output": [_guardrail_name(guardrail) for guardrail in built.output_guardrails],
        },
        "mcp_servers": [server.name for server in mcp_servers(built)],
        "dynamic_instructions": callable(built.instructions),
        "offline_script": item.offline is not None,
    }
    agent.version = _version(agent, module_name)
    return agent


class PolicyError(ValueError):
    """An entry's policy that cannot be applied (agents.E004)."""


def _is_function_tool(tool: Any) -> bool:
    from agents import FunctionTool

    return isinstance(tool, FunctionTool)


def _reachable(agent: Any) -> list[Any]:
    """The agent and the Agents it hands off to, directly or not (each once)."""
    from agents import Agent

    found: list[Any] = []

    def walk(current: Any) -> None:
        if any(current is known for known in found):
            return
        found.append(current)
        for target in current.handoffs:
            if isinstance(target, Agent):
                walk(target)

    walk(agent)
    return found


def _guardrail_name(guardrail: Any) -> str:
    return str(guardrail.get_name() if hasattr(guardrail, "get_name") else getattr(guardrail, "name", "guardrail"))


def mcp_servers(agent: Any) -> list[Any]:
    """Every MCP server of an agent and of the agents it hands off to (each once)."""
    servers: list[Any] = []
    for current in _reachable(agent):
        for server in current.mcp_servers:
            if all(server is not known for known in servers):
                servers.append(server)
    return servers


@functools.cache
def _module_digest(module_name: str) -> str:
    """A digest of the module's source and of the Python files beside it and below (its
    package's: the tools and prompts it imports from there change the version too)."""
    module = sys.modules.get(module_name)
    path = Path(inspect.getfile(module)) if module is not None else None
    if path is None or not path.exists():
        return ""
    digest = hashlib.sha256()
    files = sorted(path.parent.rglob("*.py")) if "." in module_name else [path]  # a package's module, or one file
    for file in files[:PACKAGE_DIGEST_MAX_FILES]:
        digest.update(str(file.relative_to(path.parent)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


# The most files of a package its version digest reads.
PACKAGE_DIGEST_MAX_FILES = 500


def _version(agent: CatalogAgent, module_name: str) -> str:
    payload = json.dumps([agent.name, agent.record(), _module_digest(module_name)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


_loaded: dict[str, CatalogAgent] | None = None


def catalog() -> dict[str, CatalogAgent]:
    """This process's agents, loaded once (CatalogError when the modules cannot be loaded)."""
    global _loaded
    if _loaded is None:
        _loaded = load()
    return _loaded


def catalog_reset() -> None:
    """Forget the loaded agents (tests that change HARNESS_AGENT_MODULES)."""
    global _loaded
    _loaded = None
    _module_digest.cache_clear()


def agent_get(name: str) -> CatalogAgent | None:
    return catalog().get(name)


def registry_version(agents: dict[str, CatalogAgent] | None = None) -> str:
    """One digest of every agent's version: equal on two workers that run the same agents."""
    agents = catalog() if agents is None else agents
    payload = json.dumps(sorted((name, agent.version) for name, agent in agents.items()))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- publishing --------------------------------------------------------------------------------


def catalog_publish(publisher: str, *, using: str = "default") -> int:
    """Write this process's agents into the published registry, in one transaction: agents it
    does not have are removed (the newest publisher's registry is the one the web uses).
    Returns how many agents it published."""
    from django.db import transaction
    from django.utils import timezone

    from execution.models import PublishedAgent
    from runs.published import published_clear

    agents = catalog()
    now = timezone.now()
    rows = [
        PublishedAgent(
            name=agent.name,
            description=agent.description,
            spec=agent.record(),
            version=agent.version,
            publisher=publisher[:100],
            published_at=now,
        )
        for agent in agents.values()
    ]
    with transaction.atomic(using=using):
        PublishedAgent.objects.using(using).exclude(name__in=list(agents)).delete()
        PublishedAgent.objects.using(using).bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["name"],
            update_fields=["description", "spec", "version", "publisher", "published_at"],
        )
    published_clear()
    return len(rows)


def publish_after_migrate(sender: Any = None, using: str = "default", **kwargs: Any) -> None:
    """After every migrate (and a test database's flush): publish, unless the modules are
    broken (the run engine's system check stops on that, with the reason)."""
    import logging

    try:
        catalog_publish(f"migrate:{_hostname()}", using=using)
    except CatalogError as exc:
        logging.getLogger(__name__).warning("agents not published: %s", exc)


def _hostname() -> str:
    import socket

    return socket.gethostname()


@register("agents")
def check_agent_modules(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """agents.E001-E004: HARNESS_AGENT_MODULES loads, every name is unique, every policy applies."""
    try:
        catalog()
    except CatalogError as exc:
        return [Error(message, hint=hint, id=check_id) for check_id, message, hint in exc.errors]
    return []
