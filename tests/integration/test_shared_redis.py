"""Two deployments on one Redis database, each with its own HARNESS_REDIS_PREFIX: each one's
workers run its own runs only (the run queue, the jobs queue, the cache and the per-key
counts are all under the prefix)."""

from __future__ import annotations

import pytest
import redis

from conftest import redis_reachable
from tests.integration.harness import Harness

pytestmark = [pytest.mark.integration, pytest.mark.one_database]

REDIS_URL = "redis://127.0.0.1:6379/5"
RUNS = 8


def test_two_deployments_on_one_redis_each_run_their_own_runs(tmp_path):
    if not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379: the Redis path is not tested here (CI machines run one)")
    env = {"REDIS_URL": REDIS_URL, "HARNESS_API_RATE_LIMIT": "1000", "HARNESS_OFFLINE_DELAY_MS": "20"}
    made: list[Harness] = []
    try:
        for prefix in ("blue", "green"):
            (tmp_path / prefix).mkdir()
            made.append(Harness(tmp_path / prefix, HARNESS_REDIS_PREFIX=prefix, **env))
            made[-1].start()
        blue, green = made
        clients = {harness: harness.client(harness.api_key("alice")) for harness in (blue, green)}
        posted: dict[Harness, list[str]] = {harness: [] for harness in (blue, green)}
        for _ in range(RUNS // 2):  # interleaved, so that both queues hold runs at once
            for harness, client in clients.items():
                answer = client.post("/api/runs", json={"input": "What is 6 * 7?", "agent": "calculator"})
                assert answer.status_code == 202, answer.text
                posted[harness].append(answer.json()["id"])
        for harness, client in clients.items():
            for run_id in posted[harness]:
                done = harness.wait_for(client, run_id, ("succeeded", "failed"), timeout=30)
                assert done["status"] == "succeeded", (harness.env["HARNESS_REDIS_PREFIX"], done)
        keys = {key.decode() for key in redis.Redis.from_url(REDIS_URL).scan_iter(count=1000)}
        # Both used the one Redis, each under its own names: its queues, and its cache (the
        # per-key request counts).
        for prefix in ("blue", "green"):
            assert any(key.startswith(f"django_q:{prefix}") for key in keys), sorted(keys)
            assert any(key.startswith(f"{prefix}:") for key in keys), sorted(keys)
    finally:
        for harness in made:
            harness.close()
