"""The SDK's configuration checks evaluate a class's type hints once, and decide as before."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from agents import ModelSettings, RunConfig, _config_coercion

from execution import sdk


@dataclass
class TeamSettings(ModelSettings):
    note: str = ""


@dataclass
class TeamRunConfig(RunConfig):
    model_settings: TeamSettings | None = None


def test_a_class_hints_are_evaluated_once_and_still_pick_the_declared_type(monkeypatch):
    import execution.executor  # noqa: F401 (installs it, as every executing process does)

    assert _config_coercion.get_type_hints is sdk.class_type_hints
    calls: list[object] = []
    evaluate = typing.get_type_hints

    def counted(obj, *args, **kwargs):
        calls.append(obj)
        return evaluate(obj, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", counted)
    configs = [TeamRunConfig(model_settings={"temperature": 0.5, "note": f"run {n}"}) for n in range(3)]
    # The field's declared type (a subclass) still decides what a dict becomes.
    assert all(type(config.model_settings) is TeamSettings for config in configs)
    assert [config.model_settings.note for config in configs] == ["run 0", "run 1", "run 2"]
    assert calls.count(TeamRunConfig) == 1
    assert sdk.class_type_hints(TeamRunConfig) == evaluate(TeamRunConfig)
    # Anything but a plain class question goes to typing every time.
    sdk.class_type_hints(TeamRunConfig, include_extras=True)
    assert calls.count(TeamRunConfig) == 2
    assert sdk.install() == {  # twice is harmless
        "type_hints": True,
        "session_signature": True,
        "tool_context": True,
        "agent_identity": True,
    }


def test_an_sdk_that_differs_is_left_alone_with_a_warning_naming_what(monkeypatch, caplog):
    from agents import tool

    import execution.executor  # noqa: F401

    def _get_function_tool_invoke_context(function_tool, context):  # as a newer SDK might have it
        return context

    monkeypatch.setattr(tool, "_get_function_tool_invoke_context", _get_function_tool_invoke_context)
    monkeypatch.setattr(_config_coercion, "get_type_hints", lambda obj, *args, **kwargs: {})
    with caplog.at_level("WARNING", logger="execution.sdk"):
        done = sdk.install_or_warn()
    assert done == {"type_hints": False, "session_signature": True, "tool_context": True, "agent_identity": True}
    # The one in place stays; the other is the SDK's own, untouched.
    assert tool._get_function_tool_invoke_context.__wrapped__ is _get_function_tool_invoke_context
    [record] = caplog.records
    assert record.levelname == "WARNING" and record.missing == ["type_hints"]
    caplog.clear()
    monkeypatch.undo()
    with caplog.at_level("WARNING", logger="execution.sdk"):
        assert all(sdk.install_or_warn().values())
    assert caplog.records == []


class ContextSession:
    """A session whose method takes the run's context (the SDK's opt-in)."""

    async def get_items(self, limit=None, *, wrapper=None):
        return []


class PlainSession:
    async def get_items(self, limit=None):
        return []


def test_a_session_method_signature_is_inspected_once_per_function(monkeypatch):
    import inspect

    from agents.memory import session

    import execution.executor  # noqa: F401

    checks = session._session_method_accepts_wrapper
    assert checks.__wrapped__.__name__ == "_session_method_accepts_wrapper"
    inspected: list[object] = []
    signature = inspect.signature

    def counted(obj, *args, **kwargs):
        inspected.append(getattr(obj, "__func__", obj))
        return signature(obj, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counted)
    answers = [checks(ContextSession().get_items) for _ in range(3)] + [
        checks(PlainSession().get_items) for _ in range(2)
    ]
    assert answers == [True, True, True, False, False]
    assert inspected.count(ContextSession.get_items) == 1 and inspected.count(PlainSession.get_items) == 1
    assert checks(lambda wrapper=None: None) is True  # not a method: asked every time, answered as before


def test_a_tool_invoker_s_signature_is_inspected_once_and_it_gets_the_context_it_declares(monkeypatch):
    import inspect
    from typing import Any

    from agents import FunctionTool, RunContextWrapper, function_tool, tool
    from agents.tool_context import ToolContext

    import execution.executor  # noqa: F401

    choose = tool._get_function_tool_invoke_context
    assert choose.__wrapped__.__name__ == "_get_function_tool_invoke_context"

    @function_tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    async def narrow(ctx: RunContextWrapper[Any], arguments: str) -> str:
        return arguments

    narrow_tool = FunctionTool(
        name="narrow", description="", params_json_schema={"type": "object"}, on_invoke_tool=narrow
    )
    inspected: list[object] = []
    signature = inspect.signature

    def counted(obj, *args, **kwargs):
        inspected.append(obj)
        return signature(obj, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counted)
    for n in range(3):
        context = ToolContext(context=None, tool_name="t", tool_call_id=f"call_{n}", tool_arguments="{}")
        # What the SDK itself decides, every time: the same object, or the run's part of it.
        assert choose(add, context) is choose.__wrapped__(add, context) is context
        forked = choose(narrow_tool, context)
        assert forked is not context and not isinstance(forked, ToolContext)
        assert type(forked) is type(choose.__wrapped__(narrow_tool, context))
    mine = [obj for obj in inspected if obj in (add.on_invoke_tool, narrow)]
    # Once per invoker by the remembered choice, plus once per call by the direct calls above.
    assert mine.count(narrow) == 1 + 3 and mine.count(add.on_invoke_tool) == 1 + 3


def test_a_shared_agent_s_identity_keys_are_built_once_per_process_and_as_the_sdk_builds_them():
    import copy

    from agents import Agent, RunConfig, Runner, handoff
    from agents._run_state_agent_identity import _build_agent_identity_keys_by_id as sdk_keys
    from agents.run_internal import tool_use_tracker
    from agents.sandbox import runtime_session_manager

    import execution.executor  # noqa: F401 (installs the adjustments, as every executing process does)
    from execution.catalog import catalog
    from execution.offline import OfflineModel

    assert tool_use_tracker._build_agent_identity_keys_by_id.__wrapped__ is sdk_keys
    assert runtime_session_manager._build_agent_identity_keys_by_id.__wrapped__ is sdk_keys
    remembered = tool_use_tracker._build_agent_identity_keys_by_id

    # Two agents of one name (a handoff target and a tool-less twin) get distinct, stable keys.
    twin_a, twin_b = Agent(name="twin", instructions="a"), Agent(name="twin", instructions="b")
    root = Agent(name="root", handoffs=[handoff(twin_a), twin_b])
    assert remembered(root) == sdk_keys(root)  # not shared: built each time
    assert "_harness_identity_keys" not in vars(root)
    sdk.mark_shared(root)
    first = remembered(root)
    assert first == sdk_keys(root) and set(first.values()) == {"root", "twin", "twin#2"}
    assert remembered(root) is first  # built once
    # A copy that carries the attributes is another graph: its own keys, built for it.
    twin = copy.copy(root)
    assert remembered(twin) == sdk_keys(twin) and id(twin) in remembered(twin)
    assert "_harness_identity_keys" not in vars(root.clone())

    # The harness's shared agents: a run on one builds no keys again.
    spec = catalog()["calculator"]
    spec.build("offline")
    agent = spec.built["offline"]
    assert "_harness_identity_keys" in vars(agent)
    built: list[object] = []

    def counted(starting_agent):
        built.append(starting_agent)
        return sdk_keys(starting_agent)

    wrapped = sdk.remembered_for_shared(counted)
    original = (
        tool_use_tracker._build_agent_identity_keys_by_id,
        runtime_session_manager._build_agent_identity_keys_by_id,
    )
    tool_use_tracker._build_agent_identity_keys_by_id = wrapped
    runtime_session_manager._build_agent_identity_keys_by_id = wrapped
    try:
        vars(agent)["_harness_identity_keys"] = None
        for _ in range(3):
            model = OfflineModel(spec)
            result = Runner.run_sync(agent, "What is 2 + 3?", run_config=RunConfig(model=model, tracing_disabled=True))
            assert "5" in result.final_output
    finally:
        tool_use_tracker._build_agent_identity_keys_by_id, runtime_session_manager._build_agent_identity_keys_by_id = (
            original
        )
    assert built == [agent]


def test_each_run_of_a_shared_agent_gets_its_own_copy_so_the_sdk_s_checks_do_not_grow_with_concurrency():
    import asyncio

    from agents import Agent, RunConfig, Runner, handoff
    from agents._run_state_agent_identity import _build_agent_identity_keys_by_id as sdk_keys
    from agents.run_internal import agent_tool_configuration, tool_use_tracker

    import execution.executor  # noqa: F401 (installs the adjustments, as every executing process does)
    from execution.catalog import catalog
    from execution.offline import OfflineModel

    spec = catalog()["calculator"]
    first, second = spec.build("offline"), spec.build("offline")
    shared = spec.built["offline"]
    assert first is not second and shared is not first and shared is not second
    # The same configuration: the very tools, guardrails and settings objects; the list of
    # tools is the run's own, so a hook that changes it in place changes that run's only.
    assert first.model_settings is shared.model_settings and first.input_guardrails is shared.input_guardrails
    assert first.tools is not shared.tools and all(a is b for a, b in zip(first.tools, shared.tools, strict=True))
    first.tools.append(object())
    assert len(second.tools) == len(shared.tools) == len(first.tools) - 1
    # Each copy's identity key is the shared agent's, carried over, not built again.
    assert tool_use_tracker._build_agent_identity_keys_by_id(first) == sdk_keys(first) == {id(first): shared.name}
    assert vars(first)["_harness_identity_keys"][0] == id(first)

    # 20 runs in flight at once: the SDK keeps one record per agent object, never 20 on one.
    most: list[int] = []
    records = agent_tool_configuration._resolutions

    async def one() -> str:
        config = RunConfig(model=OfflineModel(spec), tracing_disabled=True)
        result = Runner.run_streamed(spec.build("offline"), "What is (2 + 3) * 4?", run_config=config)
        async for _event in result.stream_events():
            most.append(max((len(active) for active in records.values()), default=0))
        return str(result.final_output)

    async def many() -> list[str]:
        return await asyncio.gather(*(one() for _ in range(20)))

    outputs = asyncio.run(many())
    assert all("20" in output for output in outputs)
    assert most and max(most) == 1

    # The same 20 on the one shared object: 20 records on it, each checked at every check.
    async def on_shared() -> None:
        async def run() -> None:
            config = RunConfig(model=OfflineModel(spec), tracing_disabled=True)
            result = Runner.run_streamed(shared, "What is (2 + 3) * 4?", run_config=config)
            async for _event in result.stream_events():
                most.append(len(records.get(id(shared), ())))

        await asyncio.gather(*(run() for _ in range(20)))

    most.clear()
    asyncio.run(on_shared())
    assert max(most) == 20
    assert id(shared) not in records and not records

    # An agent whose graph holds other agents stays shared (its graph's keys would not carry
    # over): handoffs, and agents as tools.
    root = Agent(name="root", handoffs=[handoff(Agent(name="helper"))])
    sdk.mark_shared(root)
    assert sdk.for_run(root) is root
    boss = Agent(name="boss", tools=[Agent(name="clerk").as_tool(tool_name="clerk", tool_description="x")])
    sdk.mark_shared(boss)
    assert sdk.for_run(boss) is boss and len(sdk_keys(boss)) == 2
    # An agent not marked shared is its own run's already.
    plain = Agent(name="plain")
    assert sdk.for_run(plain) is plain


def test_the_offline_model_copies_no_call_s_conversation(monkeypatch):
    """The SDK's scripted model records each call by deep-copying its input; the offline model, whose
    scripted models live for one call, skips that record, so a turn costs no copy of the conversation."""
    import asyncio
    import copy
    import types

    import agents.testing.model as scripted
    from agents import RunConfig, Runner

    import execution.executor  # noqa: F401 (installs the adjustments, as every executing process does)
    from execution.catalog import catalog
    from execution.offline import OfflineModel

    copied: list[object] = []
    real_deepcopy = copy.deepcopy

    def deepcopy(value: object, memo: object = None) -> object:
        copied.append(value)
        return real_deepcopy(value, memo)  # type: ignore[arg-type]

    # Only the scripted model's own copies (agents/testing/model.py), not the rest of the SDK's.
    monkeypatch.setattr(scripted, "copy", types.SimpleNamespace(deepcopy=deepcopy, copy=copy.copy))
    spec = catalog()["calculator"]

    async def both() -> list[str]:
        config = RunConfig(model=OfflineModel(spec), tracing_disabled=True)
        done = await Runner.run(spec.build("offline"), "What is (2 + 3) * 4?", run_config=config)
        streamed = Runner.run_streamed(spec.build("offline"), "What is (2 + 3) * 4?", run_config=config)
        async for _event in streamed.stream_events():
            pass
        return [str(done.final_output), str(streamed.final_output)]

    assert all("20" in output for output in asyncio.run(both()))
    conversations = [
        value
        for value in copied
        if isinstance(value, list) and any(isinstance(item, dict) and item.get("role") == "user" for item in value)
    ]
    settings = [value for value in copied if type(value).__name__ == "ModelSettings"]
    assert copied and conversations == [] and settings == []
