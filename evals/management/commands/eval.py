"""manage.py eval: the CI gate. Runs the golden dataset through the harness and grades it.

Exit status: 0 when every case passes and the pass rate is at least the threshold,
1 when a case fails or the rate is below it, 2 when the eval cannot run as asked.
"""

from __future__ import annotations

import logging
import sys
import xml.etree.ElementTree as ET  # noqa: S405 (we write XML, never parse it)
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

# Registers the agents.E001-E003 checks, run before this command starts: a broken
# HARNESS_AGENT_MODULES stops it with the reason.
import execution.catalog  # noqa: F401
from evals.models import EvalResult, EvalRun
from evals.services import LIVE, REPLAY, EvalError, eval_run


def junit_xml(evaluation: EvalRun) -> bytes:
    """JUnit XML: one test suite per dataset, one test case per golden case and attempt."""
    results = list(
        evaluation.results.select_related("case__dataset", "case_version", "run").order_by("case__dataset__name", "id")
    )
    suites = ET.Element("testsuites", name=f"harness eval {evaluation.id}", tests=str(len(results)))
    suites.set("failures", str(sum(1 for r in results if not r.passed)))
    by_dataset: dict[str, list[EvalResult]] = {}
    for result in results:
        by_dataset.setdefault(result.case.dataset.name, []).append(result)
    for dataset, items in by_dataset.items():
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=dataset,
            tests=str(len(items)),
            failures=str(sum(1 for r in items if not r.passed)),
            time=f"{sum(r.duration_ms for r in items) / 1000:.3f}",
        )
        for result in items:
            name = f"{result.case.name} [{result.case_id} v{result.case_version.version}]"
            if evaluation.repeat > 1:
                name += f" #{result.attempt}"
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{dataset}.{result.case.agent}",
                name=name,
                time=f"{result.duration_ms / 1000:.3f}",
            )
            if not result.passed:
                failure = ET.SubElement(case, "failure", message="; ".join(result.reasons)[:1000], type="EvalFailure")
                failure.text = "\n".join(result.reasons) + (f"\nrun: {result.run_id}" if result.run_id else "")
            out = ET.SubElement(case, "system-out")
            out.text = f"mode={evaluation.mode} run={result.run_id or '-'}\n{result.output}"
    for item in evaluation.skipped:
        found = [suite for suite in suites.iter("testsuite") if suite.get("name") == item["dataset"]]
        suite = (
            found[0]
            if found
            else ET.SubElement(suites, "testsuite", name=item["dataset"], tests="0", failures="0", time="0.000")
        )
        suite.set("tests", str(int(suite.get("tests", "0")) + 1))
        suite.set("skipped", str(int(suite.get("skipped", "0")) + 1))
        case = ET.SubElement(suite, "testcase", classname=item["dataset"], name=f"{item['name']} [{item['case']}]")
        ET.SubElement(case, "skipped", message=item["reason"])
    suites.set("skipped", str(len(evaluation.skipped)))
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


class Command(BaseCommand):
    help = (
        "Run every active golden case through the harness's runner (replaying its recorded model "
        "responses, or live), grade output, tool use and trace, store the results, print a summary "
        "and exit non-zero on any failure."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", action="append", help="Only this dataset (repeat the option for more).")
        parser.add_argument("--mode", choices=[REPLAY, LIVE], default=REPLAY, help="replay (default, no keys) or live.")
        parser.add_argument("--junit", type=Path, help="Write JUnit XML here.")
        parser.add_argument("--agent", help="Only cases of this agent.")
        parser.add_argument("--repeat", type=int, default=1, help="Run each case N times; outputs must agree.")
        parser.add_argument(
            "--min-pass-rate",
            type=float,
            default=None,
            help="Fail below this share (default HARNESS_EVAL_MIN_PASS_RATE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] < 2:
            # The runs' own INFO log lines would bury the summary; -v 2 shows them.
            logging.disable(logging.INFO)

        def progress(result: EvalResult) -> None:
            mark = "." if result.passed else "F"
            self.stdout.write(mark, ending="")
            self.stdout.flush()

        self.stdout.write(f"Running the golden cases ({options['mode']} mode): ", ending="")
        try:
            evaluation = eval_run(
                datasets=options["dataset"],
                mode=options["mode"],
                agent=options["agent"],
                repeat=options["repeat"],
                min_pass_rate=options["min_pass_rate"],
                triggered_by="manage.py eval",
                progress=progress,
            )
        except EvalError as exc:
            self.stdout.write("")
            self.stderr.write(f"eval: {exc}")
            sys.exit(2)
        self.stdout.write("\n")
        self._table(evaluation)
        if options["junit"]:
            options["junit"].parent.mkdir(parents=True, exist_ok=True)
            options["junit"].write_bytes(junit_xml(evaluation))
            self.stdout.write(f"JUnit XML: {options['junit']}")
        if evaluation.skipped:
            self.stderr.write(
                f"eval: WARNING: {len(evaluation.skipped)} live-only case(s) skipped: their runs made no "
                "model calls, so replay has nothing to play back; run them with --mode live"
            )
        if evaluation.total == 0:
            self.stderr.write("eval: no active golden cases matched; nothing was checked")
            sys.exit(1)
        if evaluation.status != EvalRun.Status.PASSED:
            sys.exit(1)

    def _table(self, evaluation: EvalRun) -> None:
        results = list(
            evaluation.results.select_related("case__dataset", "case_version").order_by("case__dataset__name", "id")
        )
        rows = [
            (
                "PASS" if r.passed else "FAIL",
                r.case.dataset.name,
                f"{r.case.name[:48]}",
                f"v{r.case_version.version}" + (f" #{r.attempt}" if evaluation.repeat > 1 else ""),
                r.run_id or "-",
                f"{r.duration_ms:.0f} ms",
            )
            for r in results
        ]
        headers = ("result", "dataset", "case", "version", "run", "time")
        widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
        line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
        self.stdout.write(line)
        self.stdout.write("-" * len(line))
        for row, result in zip(rows, results, strict=True):
            self.stdout.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
            for reason in result.reasons:
                self.stdout.write(f"      - {reason}")
        for item in evaluation.skipped:
            self.stdout.write(f"SKIP  {item['dataset']}  {item['name'][:48]}  [{item['case']}]  {item['reason']}")
        rate = evaluation.pass_rate * 100
        self.stdout.write(
            f"\n{evaluation.passed}/{evaluation.total} passed ({rate:.1f}%, threshold "
            f"{evaluation.min_pass_rate * 100:.1f}%): {evaluation.status.upper()}  [{evaluation.id}]"
            + (f"  ({len(evaluation.skipped)} live-only skipped)" if evaluation.skipped else "")
        )
