"""Record examples/support_desk/golden.json from real offline runs through the harness's runner.

uv run pytest examples/support_desk/tests/make_golden.py -p no:cacheprovider -q   (writes the file)

Each case is a run of a support desk agent, promoted as an operator promotes one in the admin;
the file is what `manage.py dumpgolden support-desk` writes and `manage.py loadgolden` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_run
from evals.models import Dataset, GoldenCase
from evals.services import golden_promote
from execution.catalog import catalog_publish, catalog_reset
from execution.executor import run_execute

pytestmark = pytest.mark.django_db(transaction=True)

GOLDEN = Path(__file__).resolve().parents[1] / "golden.json"
DATASET = "support-desk"


def test_record_the_support_desk_golden_dataset(alice, operator, settings):
    settings.HARNESS_AGENT_MODULES = "examples.support_desk.agents"
    catalog_reset()
    catalog_publish("make_golden")

    def promote(agent: str, text: str, **fields):
        run = make_run(alice, agent=agent, input=text)
        run_execute(run.pk)
        run.refresh_from_db()
        assert run.status == "succeeded", run.error
        return golden_promote(run=run, dataset_name=DATASET, user=operator, **fields)

    promote(
        "support",
        "Where is my order A-1001?",
        name="support hands an order question to billing",
        expected_output="Order status:",
        expected_tools=[{"name": "transfer_to_billing"}, {"name": "lookup_order"}],
        tags=["handoff", "tool-use"],
    )
    promote(
        "support",
        "Is MUG-01 in stock?",
        name="support checks stock with an async tool",
        expected_output="Stock:",
        expected_tools=[{"name": "check_stock"}],
        forbidden_tools=["refund"],
        tags=["tool-use"],
    )
    promote(
        "classifier",
        "I was charged twice, please refund it urgently",
        name="classifier answers a Ticket",
        expected_output='"category": "billing"',
        tags=["structured-output"],
    )
    promote(
        "shipping",
        "When will order A-1001 arrive?",
        name="shipping asks its MCP server",
        expected_output="ETA:",
        expected_tools=[{"name": "shipping_eta"}],
        tags=["mcp"],
    )
    dataset = Dataset.objects.get(name=DATASET)
    dataset.description = "The support desk example's regression cases (examples/support_desk)."
    dataset.save(update_fields=["description"])
    cases = [{"id": case.pk, **case.snapshot()} for case in GoldenCase.objects.filter(dataset=dataset).order_by("id")]
    payload = {"dataset": DATASET, "description": dataset.description, "cases": cases}
    GOLDEN.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
