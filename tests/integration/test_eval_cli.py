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

    # The pass-rate threshold: 5 of 6 (83.3%) pass, enough at 0.8, not at 0.9.
    lenient = harness.manage("eval", "--min-pass-rate", "0.8", check=False)
    assert lenient.returncode == 0 and "5/6 passed (83.3%, threshold 80.0%): PASSED" in lenient.stdout
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
