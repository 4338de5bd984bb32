"""`manage.py startagent NAME [--directory DIR]`: a new package of agents for the harness.

It copies harness/agent_template/ into DIR/NAME/ (agents.py, tests/, golden.json, README.md),
putting NAME wherever the template says `agent_name`, and prints the next steps.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

TEMPLATE = Path(__file__).resolve().parents[2] / "agent_template"
PLACEHOLDER = "agent_name"
SUFFIX = "-tpl"
# A package name, an agent name (harness.agents.NAME) and a dataset name (a slug) at once.
VALID_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def agent_package_create(*, name: str, directory: Path) -> Path:
    """Create the package `directory/name` from the template; CommandError says why not."""
    if not VALID_NAME.match(name) or keyword.iskeyword(name):
        raise CommandError(
            f"{name!r} is not a valid name: use 1-64 lower-case letters, digits and underscores, "
            "starting with a letter (it names the package, its agent and its golden dataset)."
        )
    if not directory.is_dir():
        raise CommandError(f"{directory} is not a directory.")
    target = directory / name
    if target.exists():
        raise CommandError(f"{target} already exists: pick another name or directory.")
    # `agents` is the Agents SDK's import name; a module found on the path would be shadowed.
    if importlib.util.find_spec(name) is not None:
        raise CommandError(f"{name!r} is the name of an existing Python module: pick another name.")
    templates = sorted(path for path in TEMPLATE.rglob(f"*{SUFFIX}") if path.is_file())
    target.mkdir()
    for template in templates:
        relative = template.relative_to(TEMPLATE)
        destination = target / relative.parent / relative.name.removesuffix(SUFFIX)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(template.read_text().replace(PLACEHOLDER, name))
    return target


# The input of the golden case a new package starts with (recorded from its offline script).
FIRST_CASE_INPUT = "three little words"


def first_case_record(*, name: str, directory: Path) -> dict[str, Any]:
    """Record the new agent's first golden case into its golden.json (its offline run)."""
    import asyncio
    import json
    import sys

    from harness.testing import record_case

    sys.path.insert(0, str(directory.resolve()))
    try:
        case = asyncio.run(
            record_case(name, FIRST_CASE_INPUT, module=f"{name}.agents", name=f"{name} answers", tags=("scaffold",))
        )
    finally:
        sys.path.remove(str(directory.resolve()))
    golden = directory / name / "golden.json"
    payload = json.loads(golden.read_text())
    payload["cases"] = [case]
    golden.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return case


class Command(BaseCommand):
    help = "Create a package of agents (agents.py, tests, golden.json, README.md) for HARNESS_AGENT_MODULES."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The package's name, which is also its agent's and its dataset's.")
        parser.add_argument("--directory", default=".", help="Where to create the package (default: here).")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        target = agent_package_create(name=name, directory=Path(options["directory"]))
        try:
            first_case_record(name=name, directory=Path(options["directory"]))
        except Exception as exc:  # the package is there; its dataset stays empty until a run is promoted
            self.stderr.write(f"golden.json: the first case could not be recorded ({type(exc).__name__}: {exc})")
        files = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
        self.stdout.write(self.style.SUCCESS(f"Created {target}/: {', '.join(files)}"))
        self.stdout.write(
            "Next steps (from the directory holding manage.py, with the package importable from there):\n"
            f"  1. edit {target / 'agents.py'}\n"
            f"  2. uv run pytest {target}\n"
            f"  3. HARNESS_AGENT_MODULES={name}.agents make run    # then a run of {name!r} with model offline\n"
            f"  4. promote good runs into the dataset {name!r} in the admin, then keep them beside the code:\n"
            f"     uv run python manage.py dumpgolden {name} -o {target / 'golden.json'}\n"
            f"  5. uv run python manage.py loadgolden {target / 'golden.json'}    # in CI, say\n"
            f"     HARNESS_AGENT_MODULES={name}.agents uv run python manage.py eval --dataset {name}"
        )
