"""Idempotency-Key against the real harness: concurrent retries of one request make one run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.harness import Harness

pytestmark = pytest.mark.integration


def test_ten_concurrent_retries_with_one_key_make_one_run(tmp_path):
    harness = Harness(tmp_path).start()
    try:
        key = harness.api_key("alice")
        body = {"input": "What is 6 * 7?", "agent": "calculator", "model": "offline"}

        def post(_: int) -> tuple[int, str, str | None]:
            with harness.client(key) as client:
                response = client.post("/api/runs", json=body, headers={"Idempotency-Key": "retry-me"})
                return response.status_code, response.json()["id"], response.headers.get("Idempotent-Replayed")

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(post, range(10)))
        assert {status for status, _, _ in answers} == {202}
        assert len({run_id for _, run_id, _ in answers}) == 1
        assert sum(1 for _, _, replayed in answers if replayed is None) == 1  # one created, nine replayed
        client = harness.client(key)
        assert len(client.get("/api/runs").json()["items"]) == 1
        assert harness.wait_for(client, answers[0][1], ("succeeded",))["status"] == "succeeded"
    finally:
        harness.close()
