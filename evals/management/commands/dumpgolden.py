"""Write a golden dataset to a file that loadgolden reads (to keep it next to the agents' code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Write the dataset's cases (latest versions, active or not) as JSON, to --output or stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dataset")
        parser.add_argument("--output", "-o", type=Path)

    def handle(self, *args: Any, dataset: str, output: Path | None, **options: Any) -> None:
        from evals.models import Dataset, GoldenCase

        found = Dataset.objects.filter(name=dataset).first()
        if found is None:
            names = ", ".join(Dataset.objects.order_by("name").values_list("name", flat=True)) or "none"
            raise CommandError(f"no dataset {dataset!r}; datasets: {names}")
        cases = [{"id": case.pk, **case.snapshot()} for case in GoldenCase.objects.filter(dataset=found).order_by("id")]
        text = json.dumps(
            {"dataset": found.name, "description": found.description, "cases": cases}, indent=1, sort_keys=True
        )
        if output is None:
            self.stdout.write(text)
        else:
            output.write_text(text + "\n")
            self.stderr.write(f"dataset {found.name}: {len(cases)} case(s) written to {output}")
