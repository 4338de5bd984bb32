"""Supervising child processes: the stop signals, and stopping children within a grace."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class StopSignals:
    """SIGINT and SIGTERM set `requested` instead of interrupting the supervisor."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)

    def _stop(self, signum: int, frame: Any) -> None:
        self.requested = True


def stop_children(children: dict[str, subprocess.Popen[bytes]], *, grace: float, say: Callable[[str], None]) -> None:
    """SIGTERM to every child still running; one that has not exited after `grace` seconds is killed."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop in {grace:g} s; killing it and its processes.")
            # Its own children too: killed alone, it would leave them running with no parent.
            stragglers = descendants(child.pid)
            child.kill()
            child.wait()
            for pid in stragglers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def descendants(pid: int) -> list[int]:
    """The processes under `pid` (children, theirs, ...), from /proc; [] where there is no /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            # pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ")".
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def gc_tune(threshold: int) -> bool:
    """For a long-running process whose startup is done (Django, the SDK, the agents imported):
    freeze every object startup made, so that no collection scans them again, and collect the
    youngest generation every `threshold` allocations instead of Python's 700. Under load the
    full collections over those objects were ~10% of a worker's CPU. 0: nothing changes."""
    if threshold <= 0:
        return False
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)
    return True
