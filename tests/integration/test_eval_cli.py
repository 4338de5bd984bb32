"""`manage.py eval` as CI runs it: a fresh database, the shipped starter dataset, exit codes, JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 (our own output)

import pytest

from tests.integration.harness import Harness

pytestmark = pytest.mark.integration


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)  # migrated, not started: the eval runs in-process like CI's
    yield h
    h.close()


def test_the_starter_dataset_passes_the_gate(harness, tmp_path):
    junit = tmp_path / "reports" / "eval.xml"
    done = harness.manage("eval", "--junit", str(junit), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS    starter" in done.stdout and "FAIL" not in done.stdout
    assert "passed (100.0%, threshold 100.0%): PASSED" in done.stdout
    suites = ET.parse(junit).getroot()  # noqa: S314
    assert suites.get("failures") == "0" and int(suites.get("tests")) >= 6
    (suite,) = suites.findall("testsuite")
    assert suite.get("name") == "starter"
    names = [case.get("classname") for case in suite.findall("testcase")]
    assert {"starter.assistant", "starter.calculator", "starter.scribe", "starter.coder"} <= set(names)
    assert "mode=replay run=run_" in suite.find("testcase/system-out").text


def test_a_failing_case_fails_the_gate_with_its_reason(harness, tmp_path):
    harness.manage(
        "shell",
        "-c",
        "from evals.models import GoldenCase; from evals.services import golden_save; from audit.services import Actor\n"
        "case = GoldenCase.objects.get(name='calculator calls calculate with the expression')\n"
        "case.expected_output = '(2 + 3) * 4 = 21'\n"
        "golden_save(case=case, user=None, actor=Actor.system('test'))",
    )
    junit = tmp_path / "eval.xml"
    done = harness.manage("eval", "--dataset", "starter", "--junit", str(junit), check=False)
    assert done.returncode == 1
    assert "FAIL    starter  calculator calls calculate with the expression  v2" in done.stdout
    assert "- output is not exactly '(2 + 3) * 4 = 21' (got '(2 + 3) * 4 = 20')" in done.stdout
    root = ET.parse(junit).getroot()  # noqa: S314
    assert root.get("failures") == "1"
    (failure,) = root.iter("failure")
    assert "output is not exactly" in failure.get("message") and "run: run_" in failure.text

    # The pass-rate threshold: 6 of 7 (85.7%) pass, enough at 0.8, not at 0.9.
    lenient = harness.manage("eval", "--min-pass-rate", "0.8", check=False)
    assert lenient.returncode == 0 and "6/7 passed (85.7%, threshold 80.0%): PASSED" in lenient.stdout
    strict = harness.manage("eval", "--min-pass-rate", "0.9", check=False)
    assert strict.returncode == 1 and "threshold 90.0%): FAILED" in strict.stdout
    # ...and an agent filter that leaves only passing cases passes.
    only_scribe = harness.manage("eval", "--agent", "scribe", "--repeat", "2", check=False)
    assert only_scribe.returncode == 0, only_scribe.stdout
    assert "v1 #2" in only_scribe.stdout


def test_bad_options_exit_2_with_a_clear_message(harness):
    unknown = harness.manage("eval", "--dataset", "nope", check=False)
    assert unknown.returncode == 2 and "unknown dataset(s): nope (datasets: starter)" in unknown.stderr
    agent = harness.manage("eval", "--agent", "nope", check=False)
    assert agent.returncode == 2 and "unknown agent 'nope'" in agent.stderr
    mode = harness.manage("eval", "--mode", "sideways", check=False)
    assert mode.returncode != 0 and "invalid choice" in mode.stderr


def test_a_run_without_model_calls_promotes_to_a_live_only_case_the_gate_skips_aloud(harness, tmp_path):
    # A run that failed before any model call (no key for its model) has no cassette.
    promoted = harness.sql(
        "from django.contrib.auth.models import User\n"
        "from audit.services import Actor\n"
        "from evals.services import golden_promote\n"
        "from execution.executor import run_execute\n"
        "from runs.services import run_create\n"
        "alice = User.objects.create_user('alice')\n"
        "run = run_create(owner=alice, actor=Actor.system('test'), agent='calculator', input='What is 1 + 1?',\n"
        "                 model='gpt-5.4-mini', enqueue=False)\n"
        "run_execute(run.pk)\n"
        "run.refresh_from_db()\n"
        "case = golden_promote(run=run, dataset_name='starter', user=alice)\n"
        "print(json.dumps([run.status, run.model_calls, case.pk]))"
    )
    status, calls, case_id = promoted
    assert status == "failed" and calls == []
    junit = tmp_path / "eval.xml"
    done = harness.manage("eval", "--dataset", "starter", "--junit", str(junit), check=False)
    # The replay gate is not failed forever by a case it cannot replay: it skips it, aloud.
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SKIP  starter  calculator: What is 1 + 1?  [{case_id}]  live-only" in done.stdout
    assert "(1 live-only skipped)" in done.stdout
    assert "WARNING: 1 live-only case(s) skipped" in done.stderr
    root = ET.parse(junit).getroot()  # noqa: S314
    assert root.get("skipped") == "1" and root.get("failures") == "0"
    (skipped,) = root.iter("skipped")
    assert skipped.get("message").startswith("live-only")
