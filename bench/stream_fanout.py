"""Idle streams without Redis: what N open SSE streams on one queued run cost the web process.

Starts the real harness (daphne + worker, SQLite, no REDIS_URL: no channel layer, streams
follow the database), writes a queued run that no worker will pick up (so its streams stay
idle), and measures, first with no stream open and then with --streams SSE streams open on
that run (all in this process, reading):

- the web process's CPU, from utime+stime in /proc/<pid>/stat over --window seconds;
- `GET /health` and `POST /api/runs` latency, one request at a time, alternating (p50/p99
  of --requests each, after ten of each to warm up; the runs posted execute meanwhile).

    uv run python bench/stream_fanout.py                  # 200 streams, SQLite
    uv run python bench/stream_fanout.py --streams 50 200
    uv run python bench/stream_fanout.py --postgres       # Postgres (TEST_POSTGRES_URL's server)
    uv run python bench/stream_fanout.py --count-sql      # also event-log SELECTs/s (slower server)

--count-sql starts the harness with tests.integration.sql_count_settings, which logs every
SELECT on the event table to a file: it costs the server CPU of its own, so its CPU figures
are not the plain ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harness_site.test_settings")
os.environ.pop("DATABASE_URL", None)
if "--postgres" in sys.argv:  # the harness gets a fresh database on this server (tests' Harness)
    os.environ["DATABASE_URL"] = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/harness")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
import psutil  # noqa: E402

from tests.integration.harness import Harness  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")

QUEUED_RUN = (
    "from django.contrib.auth.models import User\n"
    "from runs import events\n"
    "from runs.models import Run, Session\n"
    "owner = User.objects.get(username='bench')\n"
    "run = Run.objects.create(owner=owner, session=Session.objects.create(owner=owner), agent='calculator', "
    "model='offline', input='1+1')\n"
    "events.events_append(run_id=run.id, events=[('run.queued', {'status': 'queued'})])\n"
    "print(json.dumps(run.id))"
)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def web_pid(harness: Harness) -> int:
    check(harness.process is not None, "the harness is not running")
    assert harness.process is not None  # noqa: S101 (for the type checker)
    return next(
        p.pid
        for p in psutil.Process(harness.process.pid).children(recursive=True)
        if "harness_site.webserver" in " ".join(p.cmdline())
    )


def cpu_seconds(pid: int) -> float:
    # Fields after the command name (which may hold spaces): utime and stime are the 14th and 15th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def cpu_percent(pid: int, window: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(window)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


async def latencies(client: httpx.AsyncClient, count: int, warmup: int = 10) -> dict[str, float]:
    health, post = [], []
    for index in range(warmup + count):
        started = time.perf_counter()
        check((await client.get("/health")).status_code == 200, "/health failed")
        health.append(time.perf_counter() - started)
        started = time.perf_counter()
        response = await client.post(
            "/api/runs", json={"input": f"{index} + 1", "agent": "calculator", "model": "offline"}
        )
        check(response.status_code == 202, response.text)
        post.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)
    del health[:warmup], post[:warmup]  # the first requests of a client warm caches and connections

    def pct(values: list[float], q: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, int(len(values) * q))] * 1000

    return {
        "health_p50": statistics.median(health) * 1000,
        "health_p99": pct(health, 0.99),
        "post_p50": statistics.median(post) * 1000,
        "post_p99": pct(post, 0.99),
    }


async def hold(client: httpx.AsyncClient, run_id: str, opened: list[int], stop: asyncio.Event) -> None:
    async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
        check(response.status_code == 200, f"stream: {response.status_code}")
        opened.append(1)
        async for _line in response.aiter_lines():
            if stop.is_set():
                return


def event_reads(harness: Harness, count_dir: Path | None) -> int:
    if count_dir is None:
        return 0
    log = count_dir / f"{web_pid(harness)}.log"
    return log.read_text().count("\n") if log.exists() else 0


async def measure(
    harness: Harness, key: str, run_id: str, streams: int, window: float, requests: int, count_dir: Path | None
) -> dict[str, float]:
    pid = web_pid(harness)
    headers = {"Authorization": f"Bearer {key}"}
    client = httpx.AsyncClient(base_url=harness.base_url, headers=headers, timeout=30)
    stream_client = httpx.AsyncClient(
        base_url=harness.base_url,
        headers=headers,
        timeout=httpx.Timeout(30, read=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
    )
    stop, opened = asyncio.Event(), list[int]()
    holders = [asyncio.create_task(hold(stream_client, run_id, opened, stop)) for _ in range(streams)]
    deadline = time.monotonic() + 60
    while len(opened) < streams and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    check(len(opened) == streams, f"only {len(opened)} of {streams} streams opened")
    await asyncio.sleep(2)  # settle
    reads = event_reads(harness, count_dir)
    result = {"cpu": await cpu_percent(pid, window)}
    result["reads_per_s"] = (event_reads(harness, count_dir) - reads) / window
    result.update(await latencies(client, requests))
    stop.set()
    for holder in holders:
        holder.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    await stream_client.aclose()
    await client.aclose()
    await asyncio.sleep(2)  # let the server notice the closed streams
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[200])
    parser.add_argument("--window", type=float, default=10, help="seconds of CPU sampling")
    parser.add_argument("--requests", type=int, default=100, help="GET /health and POST /api/runs pairs")
    parser.add_argument("--postgres", action="store_true", help="Postgres instead of SQLite")
    parser.add_argument("--count-sql", action="store_true", help="count the web process's event-log SELECTs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        env = {}
        count_dir = None
        if args.count_sql:
            count_dir = Path(workdir) / "sql-counts"
            count_dir.mkdir()
            env = {
                "DJANGO_SETTINGS_MODULE": "tests.integration.sql_count_settings",
                "HARNESS_SQL_COUNT_DIR": str(count_dir),
            }
        harness = Harness(Path(workdir), **env).start()
        try:
            key = harness.api_key("bench")
            run_id = harness.sql(QUEUED_RUN)
            for streams in [0, *args.streams]:
                r = asyncio.run(measure(harness, key, run_id, streams, args.window, args.requests, count_dir))
                reads = f"  event-log SELECTs/s={r['reads_per_s']:7.1f}" if count_dir else ""
                print(
                    f"streams={streams:4}  web CPU={r['cpu']:5.1f}%{reads}  "
                    f"/health p50={r['health_p50']:6.1f} p99={r['health_p99']:6.1f} ms  "
                    f"POST /api/runs p50={r['post_p50']:6.1f} p99={r['post_p99']:6.1f} ms",
                    flush=True,
                )
        finally:
            harness.close()


if __name__ == "__main__":
    main()
