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
    assert sdk.install() == {"type_hints": True, "session_signature": True}  # twice is harmless


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
