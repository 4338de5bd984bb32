"""Sandbox command latency and lifecycle cost: local bubblewrap vs an unconfined subprocess.

Per-command round trip for `true` and `python3 -c pass`, measured through the same
session API the agent's exec_command tool calls (`session.exec`), on:

- confined: the local provider (ConfinedSession: setpriv when root, bwrap, timeout, prlimit);
- unconfined: the same SDK session with confinement off (a plain subprocess), the baseline.

Plus sandbox create+destroy: client.create + start (manifest applied, outputs/ made) +
aclose + delete (workspace removed), for both. Prints p50/p99 in milliseconds.

    uv run python bench/sandbox_exec.py                 # 200 commands, 50 lifecycles each
    uv run python bench/sandbox_exec.py --commands 500 --lifecycles 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harness_site.test_settings")

import django  # noqa: E402

django.setup()

from agents.sandbox import Manifest  # noqa: E402
from agents.sandbox.entries import Dir  # noqa: E402

from sandboxes.bwrap import bwrap_path  # noqa: E402
from sandboxes.local import ConfinedClient  # noqa: E402
from sandboxes.policy import OUTPUTS_DIR, SandboxPolicy  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def row(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"| {label} | {len(ms)} | {statistics.median(ms):.1f} ms | {percentile(ms, 99):.1f} ms |"


async def lifecycle(client: ConfinedClient, root: Path, index: int) -> float:
    started = time.perf_counter()
    manifest = Manifest(root=str(root / f"bench-{index}"), entries={OUTPUTS_DIR: Dir()})
    session = await client.create(manifest=manifest)
    await session.start()
    await session.aclose()
    await client.delete(session)
    return time.perf_counter() - started


async def measure(confine: bool, commands: int, lifecycles: int, root: Path) -> dict[str, list[float]]:
    client = ConfinedClient(policy=SandboxPolicy.from_settings(), confine=confine)
    results: dict[str, list[float]] = {"true": [], "python3 -c pass": [], "create+destroy": []}
    session = await client.create(manifest=Manifest(root=str(root / "commands"), entries={OUTPUTS_DIR: Dir()}))
    await session.start()
    try:
        for command in ("true", "python3 -c pass"):
            for _ in range(5):  # warm the page cache
                await session.exec(command, shell=True)  # noqa: S604 (inside the sandbox)
            for _ in range(commands):
                started = time.perf_counter()
                result = await session.exec(command, shell=True)  # noqa: S604 (inside the sandbox)
                results[command].append(time.perf_counter() - started)
                if result.exit_code != 0:
                    raise SystemExit(f"{command!r} failed: {result.stderr!r}")
    finally:
        await session.aclose()
        await client.delete(session)
    for index in range(lifecycles):
        results["create+destroy"].append(await lifecycle(client, root, index))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--lifecycles", type=int, default=50)
    args = parser.parse_args()
    if bwrap_path() is None:
        raise SystemExit("bubblewrap is not installed: make sandbox-deps")
    root = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    os.chmod(root, 0o711)  # noqa: S103 (the sandbox uid must traverse it)
    try:
        print(f"uid {os.geteuid()}, {os.cpu_count()} cores, {args.commands} commands, {args.lifecycles} lifecycles")
        print("| measurement | n | p50 | p99 |")
        print("|---|---:|---:|---:|")
        for confine in (True, False):
            label = "bubblewrap" if confine else "unconfined subprocess"
            results = asyncio.run(measure(confine, args.commands, args.lifecycles, root))
            for name, values in results.items():
                print(row(f"{label}: {name}", values))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
