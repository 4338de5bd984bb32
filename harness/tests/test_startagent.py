"""`manage.py startagent`: the package it creates, and the names it refuses."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from harness import AgentEntry, OfflineScript

NAME = "helpdesk_scaffold"


@pytest.fixture
def importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp_path on sys.path; the generated modules are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for module in [name for name in sys.modules if name == NAME or name.startswith(f"{NAME}.")]:
        del sys.modules[module]


def test_it_creates_a_package_of_agents_tests_and_an_empty_golden_dataset(importable: Path) -> None:
    call_command("startagent", NAME, directory=str(importable))

    package = importable / NAME
    files = sorted(str(path.relative_to(package)) for path in package.rglob("*") if path.is_file())
    assert files == [
        "README.md",
        "__init__.py",
        "agents.py",
        "golden.json",
        "tests/__init__.py",
        "tests/test_agents.py",
    ]
    assert json.loads((package / "golden.json").read_text()) == {"cases": [], "dataset": NAME}
    readme = (package / "README.md").read_text()
    assert f"uv run pytest {NAME}" in readme
    assert f"HARNESS_AGENT_MODULES={NAME}.agents make run" in readme
    assert f"loadgolden {NAME}/golden.json" in readme
    assert "agent_name" not in "".join(path.read_text() for path in package.rglob("*") if path.is_file())


def test_the_generated_agents_are_valid_entries_with_every_feature(importable: Path) -> None:
    call_command("startagent", NAME, directory=str(importable))
    from execution.catalog import load

    module = importlib.import_module(f"{NAME}.agents")
    [entry] = module.AGENTS
    assert isinstance(entry, AgentEntry)
    assert entry.name == NAME
    assert isinstance(entry.offline_script("three little words"), OfflineScript)

    [loaded] = load([f"{NAME}.agents"]).values()
    assert loaded.tool_names == ["count_words", "transfer_to_expert"]  # the expert's tool, then the handoff
    assert loaded.facts["handoffs"] == ["transfer_to_expert"]
    assert loaded.facts["guardrails"]["input"] == ["no_passwords"]
    expert = entry.agent.handoffs[0]
    assert expert.output_type is module.Answer
    assert [tool.name for tool in expert.tools] == ["count_words"]


def test_the_generated_tests_pass(importable: Path) -> None:
    if importlib.util.find_spec("harness.testing") is None:
        pytest.skip("harness.testing is not there yet")
    call_command("startagent", NAME, directory=str(importable))

    tests = importlib.import_module(f"{NAME}.tests.test_agents")
    names = [name for name, function in inspect.getmembers(tests, inspect.isfunction) if name.startswith("test_")]
    assert len(names) == 3
    for name in names:
        getattr(tests, name)()


def test_it_refuses_a_package_that_exists(importable: Path) -> None:
    call_command("startagent", NAME, directory=str(importable))
    (importable / NAME / "agents.py").write_text("# mine\n")

    with pytest.raises(CommandError, match="already exists"):
        call_command("startagent", NAME, directory=str(importable))
    assert (importable / NAME / "agents.py").read_text() == "# mine\n"


@pytest.mark.parametrize("name", ["Helpdesk", "help-desk", "1desk", "_desk", "class", "", "a" * 65])
def test_it_refuses_an_invalid_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(CommandError, match="not a valid name"):
        call_command("startagent", name, directory=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["agents", "json", "harness"])
def test_it_refuses_the_name_of_an_existing_module(tmp_path: Path, name: str) -> None:
    with pytest.raises(CommandError, match="existing Python module"):
        call_command("startagent", name, directory=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_a_directory_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="not a directory"):
        call_command("startagent", NAME, directory=str(tmp_path / "nowhere"))
