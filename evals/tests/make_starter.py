"""Regenerate evals/fixtures/starter.json: record the starter cases from real offline runs.

uv run pytest evals/tests/make_starter.py -p no:cacheprovider -q -s   (writes the fixture)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_run
from evals.models import GoldenCase
from evals.services import golden_promote
from execution.executor import run_execute

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "starter.json"


def test_record_the_starter_dataset(alice, operator, bwrap):
    def promote(run, **fields):
        run_execute(run.pk)
        run.refresh_from_db()
        assert run.status == "succeeded", run.error
        return golden_promote(run=run, dataset_name="starter", user=operator, **fields)

    promote(
        make_run(alice, agent="assistant", input="How long is this: the quick brown fox"),
        name="assistant measures text with a tool",
        expected_output="you wrote 8 word(s)",
        expected_tools=[{"name": "text_stats"}],
        tags=["tool-use"],
    )
    promote(
        make_run(alice, agent="calculator", input="What is (2 + 3) * 4?"),
        name="calculator calls calculate with the expression",
        expected_output="(2 + 3) * 4 = 20",
        output_match="exact",
        expected_tools=[{"name": "calculate", "arguments": {"expression": "(2 + 3) * 4"}}],
        tags=["tool-use", "exact"],
    )
    promote(
        make_run(alice, agent="calculator", input="Tell me a joke."),
        name="calculator declines what is not arithmetic",
        expected_output="I can only evaluate arithmetic",
        expected_tools=[],
        forbidden_tools=["calculate"],
        tags=["refusal"],
    )
    promote(
        make_run(alice, agent="scribe", input="Release notes: v2 ships."),
        name="scribe saves a file artifact",
        expected_output=r"^Saved notes\.md \(24 bytes\) as artifact art_\w+\.$",
        output_match="regex",
        expected_tools=[{"name": "save_artifact", "arguments": {"name": "notes.md"}}],
        tags=["tool-use", "artifacts"],
    )
    promote(
        make_run(alice, agent="coder", input="```sh\necho $((6 * 7))\n```"),
        name="coder runs a command in its sandbox",
        expected_output="42",
        expected_tools=[{"name": "exec_command"}],
        assertions=[{"type": "contains", "value": "exited with code 0"}],
        tags=["tool-use", "sandbox"],
    )
    promote(
        make_run(alice, agent="refunds", input="Please refund $40 on order A-1002."),
        name="refunds makes a small refund without asking",
        expected_output=r"^Refunded \$40\.00 on order A-1002 \(refund rf_\w+\)\.$",
        output_match="regex",
        expected_tools=[{"name": "refund", "arguments": {"order_id": "A-1002", "amount": 40}}],
        tags=["tool-use", "approvals"],
    )
    first = make_run(alice, agent="assistant", input="Remember: my name is Ada.")
    run_execute(first.pk)
    promote(
        make_run(alice, agent="assistant", input="What did I just tell you?", session_id=first.session_id),
        name="assistant continues a session",
        expected_output="turn 2",
        expected_tools=[{"name": "text_stats"}],
        tags=["session"],
    )
    # The test database holds the shipped cases too (loaded after migrate): write only the new recordings.
    shipped = [case["id"] for case in json.loads(FIXTURE.read_text())["cases"]] if FIXTURE.exists() else []
    cases = [
        {"id": case.pk, **case.snapshot()}
        for case in GoldenCase.objects.filter(dataset__name="starter").exclude(pk__in=shipped).order_by("id")
    ]
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps({"dataset": "starter", "cases": cases}, indent=1, sort_keys=True) + "\n")
