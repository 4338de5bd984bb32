"""The starter golden dataset that ships with the harness (evals/fixtures/starter.json).

Loaded by a data migration and again after every migrate (and test-database flush); a
case that already exists is left exactly as operators have made it.
Regenerate the fixture with `uv run pytest evals/tests/make_starter.py -s`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "starter.json"


def starter_load(apps: Any = None, schema_editor: Any = None, *, using: str = "default") -> int:
    """Create the starter cases that do not exist yet (each with its version 1). Returns how many."""
    payload = json.loads(FIXTURE.read_text())
    description = "Ships with the harness: each registry agent, tool use, a refusal, a session."
    return golden_load(payload, apps, schema_editor, using=using, description=description)


def golden_load(
    payload: dict[str, Any],
    apps: Any = None,
    schema_editor: Any = None,
    *,
    using: str = "default",
    description: str = "",
) -> int:
    """Create a dataset's cases from a golden file ({"dataset": name, "cases": [...]}, the format
    of `manage.py dumpgolden`) that do not exist yet, each with its version 1. Returns how many."""
    if apps is None:
        from django.apps import apps as registry

        apps = registry
    if schema_editor is not None:
        using = schema_editor.connection.alias
    dataset_model = apps.get_model("evals", "Dataset")
    case_model = apps.get_model("evals", "GoldenCase")
    version_model = apps.get_model("evals", "GoldenCaseVersion")
    dataset, _ = dataset_model.objects.using(using).get_or_create(
        name=payload["dataset"], defaults={"description": description}
    )
    created = 0
    for case in payload["cases"]:
        fields = {key: value for key, value in case.items() if key != "id"}
        if case_model.objects.using(using).filter(pk=case["id"]).exists():
            continue
        row = case_model.objects.using(using).create(id=case["id"], dataset=dataset, version=1, **fields)
        version_model.objects.using(using).create(case=row, version=1, data=fields)
        created += 1
    return created


def starter_after_migrate(sender: Any = None, using: str = "default", **kwargs: Any) -> None:
    starter_load(using=using)
