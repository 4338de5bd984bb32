"""The run engine's share of the SDK loop, A/B in one process: what the event loop and the
remembered agent identity keys (execution.sdk) cost per run.

50 concurrent streamed runs of the calculator agent on the offline model (`Runner.run_streamed`,
tracing off, no database), in blocks of --runs runs, measured as process CPU per run. The
variants alternate block by block, so a machine whose speed drifts (a shared VM) slows all of
them alike; each pair of neighbouring blocks gives a ratio:

  asyncio    Python's own event loop, identity keys remembered (the agent is shared);
  uvloop     HARNESS_WORKER_EVENT_LOOP's default, identity keys remembered;
  unshared   uvloop, the keys built on every run and turn (as the SDK does for any agent), every
             run on the one agent object;
  one        uvloop, keys remembered, every run on the one shared agent object instead of its
             own shallow copy (`execution.sdk.for_run`, which the others use);
  recorded   uvloop, keys remembered, the offline model's scripted model recording each call
             (deep copies of its input and settings) as the SDK's does.

--concurrency sets the runs in flight (default 50); --history N puts N earlier messages before
the question, as a session's conversation would (default 0).

    uv run python bench/sdk_loop_ab.py [--blocks 8] [--runs 400] [--concurrency 50] [--history 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harness_site.settings")
os.environ.setdefault("DEBUG", "true")  # a throw-away SECRET_KEY; nothing is served or stored

import django  # noqa: E402 (after the environment it reads)

django.setup()

import uvloop  # noqa: E402
from agents import RunConfig, Runner  # noqa: E402
from agents.testing import ScriptedModel  # noqa: E402

import execution.executor  # noqa: E402, F401 (installs the SDK adjustments, as a worker does)
from execution import offline, sdk  # noqa: E402
from execution.catalog import catalog  # noqa: E402
from execution.offline import OfflineModel  # noqa: E402

CONCURRENCY = 50
QUESTION = "What is (2 + 3) * 4?"
INPUT: str | list[dict[str, str]] = QUESTION
UNRECORDED = offline._OneCall.__dict__["_record_call"]


def conversation(messages: int) -> str | list[dict[str, str]]:
    """The question after `messages` earlier messages (user and assistant in turn), ~300 bytes each."""
    if not messages:
        return QUESTION
    earlier = [
        {"role": "user", "content": f"What is {i} + {i}? " + "context " * 40}
        if i % 2 == 0
        else {"role": "assistant", "content": f"{i} + {i} = {2 * i}. " + "because " * 40}
        for i in range(messages)
    ]
    return [*earlier, {"role": "user", "content": QUESTION}]


async def block(spec: Any, agent: Any, runs: int, per_run: bool) -> None:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with slots:
            config = RunConfig(model=OfflineModel(spec), tracing_disabled=True)
            starting = sdk.for_run(agent) if per_run else agent
            given: Any = INPUT if isinstance(INPUT, str) else list(INPUT)
            result = Runner.run_streamed(starting, given, run_config=config)
            async for _event in result.stream_events():
                pass

    await asyncio.gather(*(one() for _ in range(runs)))


def measure(
    spec: Any, agent: Any, *, loop: str, shared: bool, runs: int, per_run: bool = True, recorded: bool = False
) -> float:
    """CPU ms per run of one block."""
    offline._OneCall._record_call = ScriptedModel._record_call if recorded else UNRECORDED  # type: ignore[method-assign, assignment]
    if shared:
        sdk.mark_shared(agent)
    else:
        vars(agent).pop(sdk.SHARED, None)
    started = time.process_time()
    (uvloop.run if loop == "uvloop" else asyncio.run)(block(spec, agent, runs, per_run and shared))
    return (time.process_time() - started) * 1000 / runs


def main() -> None:
    global CONCURRENCY, INPUT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=8, help="blocks of each variant (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=400, help="runs per block (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="runs in flight (default: %(default)s)")
    parser.add_argument("--history", type=int, default=0, help="earlier messages in the input (default: %(default)s)")
    args = parser.parse_args()
    CONCURRENCY = args.concurrency
    INPUT = conversation(args.history)
    spec = catalog()["calculator"]
    spec.build("offline")
    agent = spec.built["offline"]  # the shared agent; for_run copies it per run
    variants = {
        "asyncio": ("asyncio", True, True),
        "uvloop": ("uvloop", True, True),
        "unshared": ("uvloop", False, False),
        "one": ("uvloop", True, False),
        "recorded": ("uvloop", True, True),
    }
    for name, (loop, shared, per_run) in variants.items():  # warm-up
        measure(
            spec, agent, loop=loop, shared=shared, runs=args.runs // 4, per_run=per_run, recorded=name == "recorded"
        )
    results: dict[str, list[float]] = {name: [] for name in variants}
    for n in range(args.blocks):
        for name, (loop, shared, per_run) in variants.items():
            results[name].append(
                measure(
                    spec, agent, loop=loop, shared=shared, runs=args.runs, per_run=per_run, recorded=name == "recorded"
                )
            )
        print(f"block {n + 1}/{args.blocks}", file=sys.stderr, flush=True)
    for name, values in results.items():
        print(f"{name:9s} median {statistics.median(values):.2f} CPU ms/run  {[round(v, 2) for v in values]}")
    for label, a, b in (
        ("uvloop / asyncio", "asyncio", "uvloop"),
        ("remembered / built", "unshared", "one"),  # both on the one object: only the keys differ
        ("own copy / one object", "one", "uvloop"),
        ("unrecorded / recorded", "recorded", "uvloop"),
    ):
        ratios = [y / x for x, y in zip(results[a], results[b], strict=True)]
        print(f"{label}: median {statistics.median(ratios):.3f} per block pair {[round(r, 3) for r in ratios]}")


if __name__ == "__main__":
    main()
