"""Load a golden dataset file (a team's agents' regression cases) into the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction


class Command(BaseCommand):
    help = (
        "Create the golden cases of FILE ({'dataset': name, 'cases': [...]}, as dumpgolden writes it) "
        "that do not exist yet; cases that exist are left as operators made them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        from evals.starter import golden_load

        try:
            payload = json.loads(file.read_text())
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise CommandError(f"{file}: not JSON ({exc})") from None
        problem = _problem(payload)
        if problem:
            raise CommandError(f"{file}: {problem}")
        try:
            with transaction.atomic():
                created = golden_load(payload, description=str(payload.get("description", "")))
        except Exception as exc:
            raise CommandError(
                f"{file}: a case could not be stored ({type(exc).__name__}: {exc}); nothing was loaded"
            ) from None
        kept = len(payload["cases"]) - created
        self.stdout.write(f"dataset {payload['dataset']}: {created} case(s) created, {kept} already there")


FIELDS = {"id", "name", "agent", "model", "input", "cassette"}


def _problem(payload: Any) -> str:
    if not isinstance(payload, dict) or not isinstance(payload.get("dataset"), str) or not payload["dataset"]:
        return "expected an object with a dataset name and a cases list"
    if not isinstance(payload.get("cases"), list):
        return "cases must be a list"
    for index, case in enumerate(payload["cases"]):
        if not isinstance(case, dict):
            return f"cases[{index}] is not an object"
        missing = sorted(FIELDS - set(case))
        if missing:
            return f"cases[{index}] lacks {', '.join(missing)}"
    return ""
