"""The offline coder through the real harness: a block that outlasts the shell tool's yield
time ends before the next block starts (as the README promises)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.integration.harness import Harness

pytestmark = [pytest.mark.integration, pytest.mark.one_database]


def test_a_block_longer_than_the_yield_time_finishes_before_the_next_starts(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="harness-coder-it-"))
    harness = Harness(tmp_path, HARNESS_SANDBOX_ROOT=str(root), HARNESS_SANDBOX_CLOSE_GRACE_SECONDS="0").start()
    try:
        client = harness.client(harness.api_key("alice"))
        text = (
            "```sh\nsleep 31; echo slow-block-done > first.txt; echo first\n```\n"
            "```sh\ncat first.txt; echo second\n```\n"
        )
        run = client.post("/api/runs", json={"input": text, "agent": "coder", "model": "offline"}).json()
        done = harness.wait_for(client, run["id"], ("succeeded", "failed"), timeout=120)
        assert done["status"] == "succeeded", done
        # The second block saw the first one's file: it ran after the first ended.
        assert "slow-block-done" in done["output"] and "second" in done["output"], done["output"]
        assert "Process running with session ID" not in done["output"]
    finally:
        harness.close()
        shutil.rmtree(root, ignore_errors=True)
