"""The API against its own OpenAPI document, with schemathesis, through the real harness.

Every operation is fuzzed (examples, coverage, fuzzing and stateful phases, a fixed seed and a
bounded number of examples) with a valid API key. The gate: no server error, and every answer
is one the document declares, in the declared shape, content type and headers.

Not in the gate: schemathesis's positive/negative data checks. Some rules are not expressible in
JSON Schema (a usage report's range of at most 366 days, an upload confirmed before its bytes
arrived, a media type's full grammar), and an over-long input or an oversized upload is a 413 by
design, which those checks do not count as a refusal. The document does carry every rule it can:
lengths, ranges, patterns, the agents' names.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("contract")).start()
    yield h
    h.close()


def test_the_api_keeps_its_openapi_contract(harness, tmp_path):
    key = harness.api_key("alice")
    schemathesis = Path(sys.executable).parent / "schemathesis"
    done = subprocess.run(
        [str(schemathesis), "run", f"{harness.base_url}/api/openapi.json"]
        + ["--header", f"Authorization: Bearer {key}", "--checks", ",".join(CHECKS)]
        + ["--max-examples", "40", "--seed", "7", "--workers", "1", "--request-timeout", "10"]
        + ["--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its cache (.schemathesis/) stays out of the checkout
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    # Every operation the document declares was exercised.
    paths = harness.client(key).get("/api/openapi.json").json()["paths"]
    operations = sum(len(item) for item in paths.values())
    assert operations >= 18
    assert f"{operations} operations" in out or f"Tested: {operations}" in out, out[-2000:]
    assert key not in out  # the key is shown [Filtered], never in the clear
