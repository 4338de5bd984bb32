"""Process-wide adjustments to the Agents SDK, made once when the executor is imported.

Four things the SDK works out on every run give the same answer for the life of the process:

- its configuration dataclasses (Agent, RunConfig, SandboxRunConfig, ...) find a field's
  declared type by evaluating the class's type hints each time one is constructed
  (`typing.get_type_hints` re-evaluates every string annotation of the class and its bases);
- before each session call it inspects the session method's signature to see whether the method
  takes the run's context (`inspect.signature`);
- before each function tool call it inspects the tool's invoker (`inspect.signature` and
  `typing.get_type_hints`) to see whether it takes the whole tool context or only the run's;
- at the start of a run and after each turn it gives every agent reachable from the run's
  starting agent a stable identity key, from a signature of each one's whole configuration
  (instructions, tools, handoffs, guardrails ... normalized and dumped to JSON). For an agent
  the harness builds once and shares between runs (`mark_shared`: shared, so never changed),
  the keys are worked out once.

And one thing it does per agent object grows with the runs in flight, so each run of a shared
agent gets its own shallow copy (`for_run`).

Together they were about 17% of the run engine's CPU on a trivial run. Here each answer is
worked out once per class, function or shared agent. Where this SDK version does not make those checks where
expected, nothing is changed and `install` says so.
"""

from __future__ import annotations

import copy
import logging
import typing
import weakref
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

logger = logging.getLogger(__name__)

_hints: weakref.WeakKeyDictionary[type, MappingProxyType[str, Any]] = weakref.WeakKeyDictionary()
_accepts: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_forks: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def class_type_hints(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """`typing.get_type_hints`, remembered for a class asked without options (read-only)."""
    if args or kwargs or not isinstance(obj, type):
        return typing.get_type_hints(obj, *args, **kwargs)
    hints = _hints.get(obj)
    if hints is None:
        hints = _hints[obj] = MappingProxyType(typing.get_type_hints(obj))
    return hints


def remembered_by_function(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """`check(method)` remembered by the method's function (a bound method's answer does not
    depend on its instance: `self` is never the parameter looked for)."""

    def remembered(method: Any) -> bool:
        function = getattr(method, "__func__", None)
        if function is None:
            return check(method)
        known = _accepts.get(function)
        if known is None:
            known = _accepts[function] = check(method)
        return known

    remembered.__wrapped__ = check  # type: ignore[attr-defined]
    return remembered


def remembered_by_invoker(choose: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """`choose(function_tool, context)`, which gives the tool's invoker either the tool context
    itself or the run's part of it (`context._fork_with_tool_input`), depending only on the
    invoker's declared signature: which of the two is remembered per invoker function."""

    def remembered(function_tool: Any, context: Any) -> Any:
        invoker = getattr(function_tool, "on_invoke_tool", None)
        key = getattr(invoker, "__func__", invoker)
        try:
            forks = _forks.get(key)
        except TypeError:  # not weakly referenceable: asked each time
            return choose(function_tool, context)
        if forks is None:
            chosen = choose(function_tool, context)
            _forks[key] = chosen is not context
            return chosen
        return context._fork_with_tool_input(context.tool_input) if forks else context

    remembered.__wrapped__ = choose  # type: ignore[attr-defined]
    return remembered


SHARED = "_harness_identity_keys"  # on an agent shared between runs: its graph's identity keys


def mark_shared(agent: Any) -> None:
    """`agent` is shared by the runs of this process and never changed: the identity keys of
    the agents reachable from it may be remembered. (A clone is a new object, unmarked.)"""
    vars(agent).setdefault(SHARED, None)


def for_run(agent: Any) -> Any:
    """A run's own object for a shared agent: a shallow copy (its tools, guardrails, model
    settings ... are the shared agent's own objects, in a list of the run's own), its identity
    key carried over.

    While a run is in flight the SDK keeps a record of it on each agent object it uses, and
    checks every record of that object several times a turn (whether `Agent.tools` changed
    under concurrent runs): with one object shared by N runs in flight, each check is O(N), so
    a run's cost grew with the process's concurrency. With an object per run each check sees
    one record. An agent whose graph holds other agents (handoffs, agents as tools) stays
    shared: its graph's keys would not carry over to a copy.
    """
    state = vars(agent)
    if SHARED not in state or agent.handoffs:
        return agent
    kept = state[SHARED]
    if kept is None:
        from agents._run_state_agent_identity import _build_agent_identity_keys_by_id

        kept = state[SHARED] = (id(agent), MappingProxyType(_build_agent_identity_keys_by_id(agent)))
    owner, keys = kept
    if owner != id(agent) or set(keys) != {id(agent)}:
        return agent
    run_agent = copy.copy(agent)
    # The run's own list: a hook that changes it in place changes this run's tools only.
    vars(run_agent)["tools"] = list(agent.tools)
    vars(run_agent)[SHARED] = (id(run_agent), MappingProxyType({id(run_agent): keys[id(agent)]}))
    return run_agent


def remembered_for_shared(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`build(starting_agent)` (the identity keys of its agent graph, by id), remembered on a
    shared agent; built each time for any other (read-only: the SDK only looks keys up)."""

    def remembered(starting_agent: Any) -> Any:
        state = getattr(starting_agent, "__dict__", {})
        if SHARED not in state:
            return build(starting_agent)
        kept = state[SHARED]
        if kept is None:
            kept = state[SHARED] = (id(starting_agent), MappingProxyType(build(starting_agent)))
        owner, keys = kept
        return keys if owner == id(starting_agent) else build(starting_agent)  # else a copy made with its attributes

    remembered.__wrapped__ = build  # type: ignore[attr-defined]
    return remembered


def install() -> dict[str, bool]:
    """Apply all four; for each, whether it is in place (False: this SDK version differs)."""
    from agents import _config_coercion
    from agents.memory import session

    done = {}
    current = getattr(_config_coercion, "get_type_hints", None)
    if current is typing.get_type_hints:
        _config_coercion.get_type_hints = class_type_hints  # type: ignore[attr-defined]
    done["type_hints"] = _config_coercion.get_type_hints is class_type_hints  # type: ignore[attr-defined]
    check = getattr(session, "_session_method_accepts_wrapper", None)
    if callable(check) and not hasattr(check, "__wrapped__") and check.__name__ == "_session_method_accepts_wrapper":
        session._session_method_accepts_wrapper = remembered_by_function(check)  # type: ignore[assignment]
    done["session_signature"] = hasattr(getattr(session, "_session_method_accepts_wrapper", None), "__wrapped__")
    from agents import tool

    choose = getattr(tool, "_get_function_tool_invoke_context", None)
    if (
        callable(choose)
        and not hasattr(choose, "__wrapped__")
        and choose.__name__ == "_get_function_tool_invoke_context"
    ):
        tool._get_function_tool_invoke_context = remembered_by_invoker(choose)  # type: ignore[assignment]
    done["tool_context"] = hasattr(getattr(tool, "_get_function_tool_invoke_context", None), "__wrapped__")
    done["agent_identity"] = _install_identity_keys()
    return done


def _install_identity_keys() -> bool:
    """Where the SDK builds a run's agent identity keys, build them once for a shared agent."""
    from agents import _run_state_agent_identity as identity
    from agents.run_internal import tool_use_tracker
    from agents.sandbox import runtime_session_manager

    build = getattr(identity, "_build_agent_identity_keys_by_id", None)
    if not callable(build) or build.__name__ != "_build_agent_identity_keys_by_id":
        return False
    remembered = remembered_for_shared(build)
    users = (tool_use_tracker, runtime_session_manager)
    for module in users:
        current = getattr(module, "_build_agent_identity_keys_by_id", None)
        if current is build:
            module._build_agent_identity_keys_by_id = remembered  # type: ignore[attr-defined]
    return all(
        getattr(getattr(module, "_build_agent_identity_keys_by_id", None), "__wrapped__", None) is build
        for module in users
    )


def install_or_warn() -> dict[str, bool]:
    """`install`, with a warning naming what is not in place: runs still work (the SDK makes its
    own checks there), at more CPU per run, and an operator upgrading the SDK should know."""
    done = install()
    missing = sorted(name for name, in_place in done.items() if not in_place)
    if missing:
        logger.warning(
            "openai-agents adjustments not in place (this SDK version differs): its own checks run on every run",
            extra={"missing": missing},
        )
    return done
