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


def test_it_creates_a_package_of_agents_tests_and_a_golden_dataset(importable: Path) -> None:
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
    golden = json.loads((package / "golden.json").read_text())
    assert golden["dataset"] == NAME
    (case,) = golden["cases"]  # recorded from the new agent's offline run
    assert case["agent"] == NAME and case["input"] == "three little words" and case["model"] == "offline"
    assert case["expected_tools"] == [{"name": "transfer_to_expert"}, {"name": "count_words"}]
    assert json.loads(case["expected_output"]) == {"summary": "'three little words' has 3 word(s)", "words": 3}
    assert len(case["cassette"]) == 3 and case["output_match"] == "exact"
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


@pytest.mark.own_services  # a SQLite database of its own whatever DATABASE_URL says: one CI pass
def test_a_new_package_passes_the_eval_gate_in_a_fresh_database(tmp_path: Path) -> None:
    """The whole path of a team, in real processes: startagent, loadgolden, eval."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("HARNESS_", "DATABASE_", "DJANGO_"))},
        "HARNESS_IGNORE_ENV_FILE": "1",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "HARNESS_VAR_DIR": str(tmp_path / "var"),
        "HARNESS_AGENT_MODULES": "deskteam.agents",
        "PYTHONPATH": str(tmp_path),
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=root, env=env, capture_output=True, text=True, timeout=180
        )

    made = manage("startagent", "deskteam", "--directory", str(tmp_path))
    assert made.returncode == 0, made.stderr
    assert manage("migrate", "--noinput").returncode == 0
    loaded = manage("loadgolden", str(tmp_path / "deskteam" / "golden.json"))
    assert "dataset deskteam: 1 case(s) created, 0 already there" in loaded.stdout, loaded.stderr
    gate = manage("eval", "--dataset", "deskteam")
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "1/1 passed" in gate.stdout
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "deskteam")],
        cwd=root,
        env={**env, "DJANGO_SETTINGS_MODULE": "harness_site.test_settings"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
