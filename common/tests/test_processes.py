"""A long-running process tunes its garbage collector once its startup is done."""

from __future__ import annotations

import gc
from pathlib import Path

from common.processes import gc_tune


def test_startup_objects_are_frozen_and_young_ones_collected_less_often():
    before = gc.get_threshold()
    try:
        made_at_startup = [object() for _ in range(10)]
        assert gc_tune(10000) is True
        assert gc.get_threshold() == (10000, before[1], before[2])
        assert gc.get_freeze_count() > 0
        assert made_at_startup  # still alive: frozen, not collected
        gc.collect()  # a full collection leaves the frozen ones alone (and works)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_zero_leaves_the_collector_as_python_sets_it():
    before = gc.get_threshold()
    assert gc_tune(0) is False
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_child_that_will_not_stop_is_killed_with_its_own_children():
    """Killed alone, a child that ignored SIGTERM would leave its children running, parentless."""
    import subprocess
    import time

    from common.processes import descendants, stop_children

    # A shell that ignores SIGTERM, waiting on a child of its own (which would obey it).
    child = subprocess.Popen(["/bin/sh", "-c", "trap '' TERM; sleep 60 & wait"])
    deadline = time.monotonic() + 10
    while not (grandchildren := descendants(child.pid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(grandchildren) == 1
    said: list[str] = []
    stop_children({"stubborn": child}, grace=0.5, say=said.append)
    assert child.returncode == -9
    assert said == ["stubborn did not stop in 0.5 s; killing it and its processes."]
    deadline = time.monotonic() + 5
    while running(grandchildren[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(grandchildren[0])


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan waits for whichever process reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_child_that_stops_in_time_is_not_killed():
    import subprocess

    from common.processes import stop_children

    child = subprocess.Popen(["sleep", "60"])
    said: list[str] = []
    stop_children({"obedient": child}, grace=5, say=said.append)
    assert child.returncode == -15 and said == []
