"""Whatever a run prints, what the harness stores is capped, with a marker; an output over
the cap is kept whole as an artifact."""

from __future__ import annotations

import pytest
from django.test import override_settings

from artifacts.models import Artifact
from artifacts.services import artifact_storage
from conftest import make_run
from execution.executor import run_execute
from runs.models import Run, SessionItem

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("bwrap")]

CAP = 2048


@override_settings(HARNESS_MAX_STORED_CHARS=CAP, HARNESS_TOOL_OUTPUT_MAX_CHARS=8000)
def test_a_long_output_is_stored_capped_and_kept_whole_as_an_artifact(alice):
    run = make_run(alice, agent="coder", input="```sh\nseq 1 1500\n```")
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert len(run.output) <= CAP  # the cut text, its marker and the artifact's name
    assert "[truncated: " in run.output and "output.txt" in run.output
    final = run.events.get(type="run.succeeded").data
    assert final["truncated"] is True and final["output"] == run.output
    artifact = Artifact.objects.get(pk=final["output_artifact_id"], run=run, name="output.txt")
    with artifact_storage().open(artifact.object_key) as handle:
        whole = handle.read().decode()
    assert whole.startswith("Ran it in the sandbox.") and whole.rstrip().endswith("1500")
    assert artifact.size == len(whole.encode())
    for event in run.events.all():
        for value in event.data.values():
            if isinstance(value, str):
                assert len(value) <= CAP, (event.type, len(value))
    for item in SessionItem.objects.filter(session_id=run.session_id):
        assert len(str(item.data)) <= CAP * 3


@override_settings(HARNESS_MAX_STORED_CHARS=CAP)
def test_an_output_at_the_cap_is_stored_whole_without_an_artifact(alice):
    run = make_run(alice, input="What is 6 * 7?")
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.output == "6 * 7 = 42"
    assert "truncated" not in run.events.get(type="run.succeeded").data
    assert not Artifact.objects.filter(run=run).exists()
    assert Run.objects.get(pk=run.pk).status == "succeeded"
