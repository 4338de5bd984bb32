"""Stream latency: from a text delta's emission in the worker to its arrival at a WebSocket client.

Starts the real harness (daphne + django-q2 worker, SQLite) once per path (Redis channel
layer, and following the database log), runs the offline model emitting a word every
--delay-ms, and follows the runs with N concurrent WebSocket clients in this process.
Latency uses each delta's `emitted_at` (when its first token left the model; all on one
machine, one clock), so it includes the coalescing interval; deltas emitted before a client
was following live (it got them by replay) are left out. Prints p50/p99 and the events
per second delivered to all clients together.

    uv run python bench/stream_latency.py                     # 1 and 50 streams, both paths
    uv run python bench/stream_latency.py --streams 50 --paths redis
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harness_site.test_settings")
os.environ.pop("DATABASE_URL", None)

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from tests.integration.harness import Harness  # noqa: E402

FINAL = {"run.succeeded", "run.failed", "run.cancelled"}


async def follow(url: str, key: str, latencies: list[float], counts: list[int]) -> None:
    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}, max_queue=None) as socket:
        # Deltas emitted before this client was following live arrive by replay: not live latency.
        live_from = time.time() + 0.05
        async for message in socket:
            event = json.loads(message)
            counts.append(1)
            if event["type"] == "text.delta" and event["data"]["emitted_at"] > live_from:
                latencies.append(time.time() - event["data"]["emitted_at"])
            if event["type"] in FINAL:
                return


async def measure(harness: Harness, key: str, streams: int, runs: int, words: int) -> dict[str, float]:
    client = httpx.AsyncClient(base_url=harness.base_url, headers={"Authorization": f"Bearer {key}"})
    created = []
    for index in range(runs):
        body = {"input": " ".join(f"w{index}x{i}" for i in range(words)), "agent": "assistant", "model": "offline"}
        created.append((await client.post("/api/runs", json=body)).json()["id"])
    latencies: list[float] = []
    counts: list[int] = []
    started = time.monotonic()
    await asyncio.gather(
        *(
            follow(f"ws://127.0.0.1:{harness.port}/ws/runs/{created[i % runs]}/?after=0", key, latencies, counts)
            for i in range(streams)
        )
    )
    elapsed = time.monotonic() - started
    await client.aclose()
    latencies.sort()
    return {
        "deltas": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "events_per_s": len(counts) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--paths", nargs="+", default=["redis", "database"], choices=["redis", "database"])
    parser.add_argument("--words", type=int, default=300, help="words per answer (one delta each)")
    parser.add_argument("--delay-ms", type=int, default=10, help="offline model's delay per word")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    for path in args.paths:
        env = {"HARNESS_OFFLINE_DELAY_MS": str(args.delay_ms), "HARNESS_WORKERS": str(args.workers)}
        if path == "redis":
            env["REDIS_URL"] = "redis://127.0.0.1:6379/5"
        with tempfile.TemporaryDirectory() as workdir:
            harness = Harness(Path(workdir), **env).start()
            try:
                key = harness.api_key("bench")
                asyncio.run(measure(harness, key, 1, 1, 50))  # warm-up
                for streams in args.streams:
                    runs = min(streams, args.workers)
                    result = asyncio.run(measure(harness, key, streams, runs, args.words))
                    print(
                        f"{path:8} streams={streams:3} runs={runs}  deltas={result['deltas']:6}  "
                        f"p50={result['p50_ms']:6.1f} ms  p99={result['p99_ms']:6.1f} ms  "
                        f"events/s={result['events_per_s']:8.1f}",
                        flush=True,
                    )
            finally:
                harness.close()


if __name__ == "__main__":
    main()
